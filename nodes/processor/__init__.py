"""The media processor: fetches, checks and inlines the media of OpenAI chat requests.

``POST /v1/process`` takes a chat body and returns it with every media content
part replaced by what engines read without fetching anything themselves:

* images (``image_url``): the original bytes as a ``data:`` URL, after pillow
  decoded them within the pixel limit (size read from the header first);
* video (``video_url``): frames sampled with PyAV (``video_fps`` per second, at
  most ``max_frames``, evenly spread over long videos), re-encoded as an
  H.264 MP4 that keeps their timestamps (``data:video/mp4;base64,...``: every
  engine reads a video file), or with ``video_format="jpeg_frames"`` as vLLM's
  frame list ``data:video/jpeg;base64,<f1>,<f2>,...``;
* audio (``input_audio``, ``audio_url``): decoded with PyAV, downmixed to mono,
  resampled to ``audio_sample_rate`` (FFmpeg's swresample; torchaudio is not
  needed), forwarded as base64 16-bit PCM WAV;
* precomputed embeddings (``image_embeds``/``audio_embeds``/``video_embeds``):
  ``.npy`` tensors checked (dtype, shape, size, finite values) and forwarded
  unchanged.

Sources: http(s) URLs (private, loopback and link-local hosts refused unless
``allow_private_urls``; redirects re-checked), ``data:`` URLs, base64. Every
refusal is a 400 (413 when too large) in OpenAI's error shape naming the part,
e.g. ``messages[0].content[1].image_url.url``. See :mod:`.media` for the walk
over parts and :mod:`.fetch`, :mod:`.images`, :mod:`.video`, :mod:`.audio`,
:mod:`.embeds` for each check.
"""
