"""A TCP proxy that cuts connections, for the resume tests of the client."""

from __future__ import annotations

import socket
import threading


class CuttingProxy:
    """A TCP proxy in front of the server that can cut connections: `cut_after(n)` makes the
    next connection whose client side sends more than n bytes (or, with `response=True`, whose
    server side answers more than n bytes) close both ends there, as a dropped network would."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.cuts = 0
        self._plan: tuple[int, bool] | None = None
        self._lock = threading.Lock()
        self._stop = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut_after(self, n: int, *, response: bool = False) -> None:
        with self._lock:
            self._plan = (n, response)

    def _accept(self) -> None:
        while not self._stop:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.connections += 1
                plan, self._plan = self._plan, None
                self._sockets += [downstream, upstream]
            state = {"plan": plan, "sent": 0, "answered": 0}
            for src, dst, way in ((downstream, upstream, "up"), (upstream, downstream, "down")):
                threading.Thread(
                    target=self._pump,
                    args=(src, dst, way, state, downstream, upstream),
                    daemon=True,
                ).start()

    def _pump(self, src, dst, way, state, downstream, upstream) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                plan = state["plan"]
                counter = "sent" if way == "up" else "answered"
                state[counter] += len(data)
                if plan and (plan[1] == (way == "down")) and state[counter] > plan[0]:
                    keep = len(data) - (state[counter] - plan[0])
                    if keep > 0:
                        dst.sendall(data[:keep])
                    with self._lock:
                        self.cuts += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (downstream, upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass


def image_zip(path, per_class: int = 6, classes=("bars", "dots", "ring"), size: int = 8):
    """A ZIP of class folders with `per_class` small grayscale PNGs each, written to `path`."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for c, cls in enumerate(classes):
            for i in range(per_class):
                img = rng.integers(0, 40, size=(size, size)).astype(np.uint8)
                img[:, c::3] = 220
                png = io.BytesIO()
                Image.fromarray(img, "L").save(png, "PNG")
                zf.writestr(f"{cls}/{cls}{i:03d}.png", png.getvalue())
    return path


def png_text(path) -> dict:
    """The PNG's text chunks, after checking that it decodes as a PNG."""
    from PIL import Image

    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.width > 100 and image.height > 100
        return dict(image.text)


def colour_pixels(path, rgb: tuple[int, int, int], tolerance: int = 30) -> int:
    """How many pixels of the image lie within `tolerance` of the colour."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(rgb)).max(axis=2) <= tolerance).sum())
