"""Issue 18: `sceneparse demo`, started on a free local port and driven through its API with gradio_client."""
import socket

import numpy as np
import pytest
from PIL import Image

gradio = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_parses_a_photo_with_a_packaged_model_and_a_checkpoint(tiny_run, camvid_root, tmp_path):
    import sceneparse
    from sceneparse.demo import launch

    photo = tmp_path / "street.png"
    Image.open(sorted((camvid_root / "val").iterdir())[0]).convert("RGB").resize((160, 120)).save(photo)
    port = _free_port()
    page = launch("127.0.0.1", port, checkpoints=[str(tiny_run / "final.pt")], examples=[photo], block=False)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        overlay_file, table, info = client.predict(gradio_client.handle_file(str(photo)), "camvid_pspnet_effl0",
                                                   False, False, 0.5, api_name="/parse")
        assert Image.open(overlay_file).size == (160, 120)
        rows = table["data"] if isinstance(table, dict) else table
        labels = sceneparse.load("camvid_pspnet_effl0")(photo)
        shares = np.bincount(labels.ravel(), minlength=11) / labels.size
        top = int(shares.argmax())
        assert rows[0][0] == sceneparse.load("camvid_pspnet_effl0").classes[top]
        assert float(rows[0][1]) == pytest.approx(100 * shares[top], abs=0.01)
        assert "camvid_pspnet_effl0" in info and "mIoU" in info
        _, table2, info2 = client.predict(gradio_client.handle_file(str(photo)), str(tiny_run / "final.pt"),
                                          True, False, 0.3, api_name="/parse")
        assert "multi-scale + flip" in info2
    finally:
        page.close()
