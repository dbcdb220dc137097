"""Speech in front of a text model: the processor decodes the audio, a node of your own turns it into
text (PocketSphinx, a small speech recogniser that runs on the CPU), and a text model answers."""

import base64
import functools
import io
import os
import tempfile
import wave

from graph import Frontend, Graph, Media, Processor, Request, RequestNode, Text, Worker

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


class Transcribe(RequestNode):
    """Replaces each audio part of a chat with its transcript (``pip install pocketsphinx``).

    ``words``, if given, limits what it can hear to those words (a grammar): far more accurate for
    commands and digits.
    """

    accepts = Media
    produces = Text
    words: list[str] | None = None

    async def handle(self, request: Request) -> Request:
        for message in request.messages:
            content = message.get("content")
            if isinstance(content, list):
                message["content"] = [self._part(p) for p in content]
        return request

    def _part(self, part: dict) -> dict:
        if part.get("type") != "input_audio":
            return part
        return {"type": "text", "text": self.transcribe(base64.b64decode(part["input_audio"]["data"]))}

    def transcribe(self, wav_bytes: bytes) -> str:
        """The words heard in a 16 kHz mono WAV (what the processor hands on)."""
        from pocketsphinx import Decoder  # imported here: only this node's process needs it

        with wave.open(io.BytesIO(wav_bytes)) as w:
            pcm, rate = w.readframes(w.getnframes()), w.getframerate()
        decoder = Decoder(samprate=rate, **self._grammar())
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return decoder.hyp().hypstr if decoder.hyp() else ""

    def _grammar(self) -> dict:
        return {"jsgf": _grammar_file(tuple(self.words))} if self.words else {}


@functools.lru_cache(maxsize=8)
def _grammar_file(words: tuple[str, ...]) -> str:
    """A JSGF grammar of ``words`` in any order and number, written once per process."""
    rule = " | ".join(w.lower() for w in words)
    folder = tempfile.mkdtemp(prefix="transcribe-")
    path = os.path.join(folder, "words.gram")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(f"#JSGF V1.0;\ngrammar words;\npublic <words> = ( {rule} )+ ;\n")
    return path


with Graph("speech-to-text", "audio transcribed by a node of your own, then a text model") as g:
    Frontend() >> Processor() >> Transcribe() >> Worker(engine="vllm", model=MODEL)
