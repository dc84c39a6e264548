"""Cold-start floor: the least an app can answer, a fixed 4-byte JPEG (start and end
markers), on uvicorn or granian's RSGI interface. No imports."""


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"image/jpeg"), (b"content-length", b"4")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"\xff\xd8\xff\xd9"})


async def rsgi_app(scope, protocol):  # type: ignore[no-untyped-def]
    protocol.response_bytes(200, [("content-type", "image/jpeg")], b"\xff\xd8\xff\xd9")
