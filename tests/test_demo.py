"""`sceneparse demo`, started on a free local port and driven through its API with gradio_client, as a
hostile client would drive it too."""
import ipaddress
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


def _loopback(host) -> bool:
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return str(host) in ("localhost", "")


@pytest.fixture
def no_network(monkeypatch):
    """Every name looked up and every address connected to, from any thread; outside ones are refused
    (as on a machine without network), so a call home is recorded, never made."""
    contacted = []
    real_getaddrinfo, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def getaddrinfo(host, *a, **k):
        if not _loopback(host):
            contacted.append(("lookup", host))
            raise socket.gaierror(socket.EAI_NONAME, "no network in this test")
        return real_getaddrinfo(host, *a, **k)

    def check(addr):
        if isinstance(addr, tuple) and not _loopback(addr[0]):
            contacted.append(("connect", addr[0]))
            raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: (check(addr), real_connect(self, addr))[1])
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, addr: (check(addr), real_connect_ex(self, addr))[1])
    return contacted


def test_demo_parses_a_photo_with_a_packaged_model_and_a_checkpoint(tiny_run, camvid_root, tmp_path, no_network):
    import sceneparse
    from sceneparse.demo import launch

    photo = tmp_path / "street.png"
    Image.open(sorted((camvid_root / "val").iterdir())[0]).convert("RGB").resize((160, 120)).save(photo)
    port = _free_port()
    page = launch("127.0.0.1", port, checkpoints=[str(tiny_run / "final.pt")], examples=[photo], block=False)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/parse"]
        assert [p["parameter_name"] for p in api["parameters"]] == ["photo", "model", "tta", "bf16", "opacity"]
        overlay_file, table, info, ids_file = client.predict(
            photo=gradio_client.handle_file(str(photo)), model="camvid_pspnet_effl0", tta=False, bf16=False,
            opacity=0.5, api_name="/parse")
        assert Image.open(overlay_file).size == (160, 120)
        rows = table["data"] if isinstance(table, dict) else table
        labels = sceneparse.load("camvid_pspnet_effl0")(photo)
        np.testing.assert_array_equal(np.asarray(Image.open(ids_file)), labels)  # the class-id map itself
        shares = np.bincount(labels.ravel(), minlength=11) / labels.size
        top = int(shares.argmax())
        assert rows[0][0] == sceneparse.load("camvid_pspnet_effl0").classes[top]
        assert float(rows[0][1]) == pytest.approx(100 * shares[top], abs=0.01)
        assert "camvid_pspnet_effl0" in info and "mIoU" in info
        _, table2, info2, _ = client.predict(gradio_client.handle_file(str(photo)), str(tiny_run / "final.pt"),
                                             True, False, 0.3, api_name="/parse")
        assert "multi-scale + flip" in info2
        # a model the page does not offer is never loaded, whatever the API is sent
        with pytest.raises(Exception, match="unknown model|not in the list of choices"):  # gradio or ours
            client.predict(gradio_client.handle_file(str(photo)), "/proc/self/mem", False, False, 0.5,
                           api_name="/parse")
    finally:
        page.close()
    assert no_network == []  # no analytics, version check or telemetry: nothing but loopback


def test_demo_refuses_a_pixel_bomb_before_decoding_it(tmp_path):
    gr = pytest.importorskip("gradio")
    from sceneparse.demo import MAX_PIXELS, _Models, parse_for_page

    bomb = tmp_path / "bomb.png"
    Image.new("L", (5000, 5000)).save(bomb)  # 25 MP in a few kB
    assert bomb.stat().st_size < 100_000 and 5000 * 5000 > MAX_PIXELS
    with pytest.raises(gr.Error, match="25 MP, above the limit of 16 MP"):
        parse_for_page(_Models(), str(bomb), "camvid_pspnet_effl0", False, False, 0.5)
    with pytest.raises(gr.Error, match="unknown model"):
        parse_for_page(_Models(), str(bomb), "../../etc/passwd", False, False, 0.5)
    with pytest.raises(gr.Error, match="opacity"):
        parse_for_page(_Models(), str(bomb), "camvid_pspnet_effl0", False, False, float("nan"))


def test_demo_serves_only_readable_images_as_examples(tmp_path, capsys):
    from sceneparse.cli import main
    from sceneparse.data import DataError
    from sceneparse.demo import check_examples

    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(DataError, match="passwd"):
        check_examples([text])
    assert main(["demo", "--examples", str(text), "--port", str(_free_port())]) == 2  # refused, nothing served
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "passwd" in err[0]
