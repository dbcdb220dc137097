"""Build and run this repository's container image without a Docker daemon.

``scripts/build-image.sh`` reads the root ``Dockerfile`` and executes it: ``FROM
debian:<release>-<date>-slim`` becomes a debootstrap of that Debian release
(minbase, made slim the way Debian's own images are), each ``RUN`` runs in that
root filesystem (its own mount, PID, UTS and IPC namespaces, as the
Dockerfile's user, environment and working directory), ``COPY`` copies from the
build context filtered by ``.dockerignore``, and umoci packs each step as a
layer of an OCI image under ``build/image/`` with the Dockerfile's user, env,
workdir, entrypoint, cmd, exposed ports and labels in its config. An
instruction it does not support is refused with its line number, so the image
built here is the one ``docker build`` makes from the same file.

``python3 -m scripts.image.run`` is the matching ``docker run``: it unpacks the
image and starts its entrypoint as the image's user, read-only root and a tmpfs
``/tmp`` if asked, on the host's network.

Modules: ``dockerfile`` (parse), ``config`` (the image config the
instructions set), ``dockerignore`` (the build context), ``debian`` (FROM),
``rootfs`` (paths and users inside the image), ``sandbox`` (one process in a
root filesystem), ``oci`` (umoci and the image's JSON), ``build`` and ``run``
(the two commands).
"""
