"""Upload every call's recording to S3-compatible storage (AWS S3, MinIO, Ceph, R2, ...) when the call ends.

The runtime records each call to a local stereo WAV and calls your function with the finished file, off the
event loop; this example's function PUTs it to ``{endpoint}/{bucket}/{prefix}{file name}`` with httpx.
Signing is yours to choose: pass ``sign`` (e.g. botocore's SigV4 signer, or a function adding a presigned
query string) or point ``endpoint`` at a gateway that authenticates for you. With ``keep_file=False`` the
local copy is deleted only after a successful upload; a failed upload raises, which the runtime logs and
counts, and the file stays for a retry.

Run against a local MinIO, for instance::

    python examples/recording_upload_s3.py http://127.0.0.1:9000 call-recordings
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import httpx

from voice_runtime import VoiceServer
from voice_runtime.recording import RecordingFile, callback_recorder_factory


def s3_uploader(
    endpoint: str,
    bucket: str,
    *,
    prefix: str = "calls/",
    sign: Callable[[httpx.Request], httpx.Request] | None = None,
    timeout: float = 60.0,
) -> Callable[[RecordingFile], None]:
    """A ``on_file`` callback that PUTs the WAV as one object (``x-amz-meta-*`` carry the call id)."""
    base = endpoint.rstrip("/")

    def upload(recording: RecordingFile) -> None:
        url = f"{base}/{bucket}/{prefix}{recording.path.name}"
        headers = {
            "Content-Type": "audio/wav",
            "x-amz-meta-call-id": recording.call_id or "",
            "x-amz-meta-seconds": f"{recording.seconds:.2f}",
        }
        with httpx.Client(timeout=timeout) as client, recording.path.open("rb") as body:
            request = client.build_request("PUT", url, content=body.read(), headers=headers)
            if sign is not None:
                request = sign(request)
            response = client.send(request)
            response.raise_for_status()  # a failure is logged by the runtime and the local file is kept

    return upload


def main(endpoint: str, bucket: str) -> None:
    server = VoiceServer(
        recorder_factory=callback_recorder_factory(on_file=s3_uploader(endpoint, bucket), directory="recordings", keep_file=False),
    )

    @server.on_inbound_call
    def flow(session) -> None:  # type: ignore[no-untyped-def]
        session.speak("This call is recorded. Please say your card number after the tone.", wait=True)
        session.pause_recording()  # the card number is never recorded, uploaded or heard by a listener
        session.listen(timeout=20)
        session.resume_recording()
        session.speak("Thank you.", wait=True)

    server.serve(port=8080)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
