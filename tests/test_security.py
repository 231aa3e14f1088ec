"""Security: what data may make the engine do.

* Source rule (AST scan of every project ``.py`` file): no pickle is ever loaded
  from data (``pickle.load(s)``, ``Unpickler``, ``torch.load`` without
  ``weights_only=True``, ``np.load(allow_pickle=True)``, ``yaml.load``...), no
  tar is extracted by path (``extract``/``extractall``), and no model code
  downloads at run time (``from_pretrained`` needs ``local_files_only=True``).
* Tars: hostile members (``../``, absolute, symlink, hardlink, device) are
  never followed or written anywhere, by the source readers nor by the shard
  reader / validator.
* Decoders: image and video size limits refuse decompression bombs before
  the pixels exist (checked as peak memory of a fresh process); FFmpeg only
  reads the container formats we accept, so a playlist named ``.mp4`` opens
  no URL; Pillow only reads still-image formats (no EPS -> Ghostscript).
"""
from __future__ import annotations

import ast
import http.server
import io
import json
import os
import socketserver
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from fixtures.badcorpus import EPS_IMAGE, HLS_PLAYLIST, png_bomb, video_bomb
from dataengine.config import DecodeConfig, SourceConfig
from dataengine.media.decode import DecodeError, decode_media
from dataengine.format.shards import read_dataset
from dataengine.sources import list_samples, read_media
from dataengine.tools.synth import encode_jpeg, render_image, write_video
from dataengine.format.validate import validate_dataset

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("dataengine", "pipelines", "trajtok", "bench", "tests")


# ------------------------------------------------------------------ source rules
def project_files() -> list[Path]:
    files = [ROOT / "cli.py"]
    for d in SOURCE_DIRS:
        files += sorted((ROOT / d).rglob("*.py"))
    return [f for f in files if f.is_file()]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<expr>"
    return None


def violations(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads",
                    "dill.load", "dill.loads", "joblib.load", "pd.read_pickle", "pandas.read_pickle",
                    "marshal.load", "marshal.loads", "shelve.open"):
            found.append((node.lineno, f"{name}: unpickles data"))
        elif name == "torch.load" or name.endswith(".torch.load"):
            if _kw(node, "weights_only") is not True:
                found.append((node.lineno, "torch.load without weights_only=True"))
        elif name in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
            found.append((node.lineno, "np.load with allow_pickle"))
        elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load"):
            found.append((node.lineno, f"{name}: use yaml.safe_load"))
        elif last in ("extractall", "extract") and not name.startswith(("re.", "self.")):
            found.append((node.lineno, f"{name}: archive members extracted by path"))
        elif last == "from_pretrained" and _kw(node, "local_files_only") is not True:
            found.append((node.lineno, f"{name} without local_files_only=True (downloads at run time)"))
        elif name in ("torch.hub.load", "torch.hub.load_state_dict_from_url", "hf_hub_download",
                      "huggingface_hub.hf_hub_download", "snapshot_download", "urllib.request.urlopen",
                      "urllib.request.urlretrieve", "urlopen", "requests.get"):
            found.append((node.lineno, f"{name}: network access at run time"))
    return found


def test_scanner_catches_what_it_must():
    bad = """
import pickle, torch, numpy as np, yaml, tarfile
pickle.loads(b"")
torch.load("x.pt")
torch.load("x.pt", weights_only=False)
np.load("x.npy", allow_pickle=True)
yaml.load(open("x"))
tarfile.open("x").extractall("/tmp")
tf.extract(member, path="out")
Model.from_pretrained("name")
torch.hub.load("repo", "model")
"""
    good = """
import torch, numpy as np, yaml, tarfile
torch.load("x.pt", map_location="cpu", weights_only=True)
np.load("x.npz")
yaml.safe_load(open("x"))
tf.extractfile(member).read()
Model.from_pretrained(path, local_files_only=True)
re.compile("x").sub("", "y")
"""
    assert [line for line, _ in violations(ast.parse(bad))] == list(range(3, 12))
    assert violations(ast.parse(good)) == []


def test_no_source_file_loads_pickles_extracts_tars_or_downloads():
    files = project_files()
    assert len(files) > 30
    problems = []
    for f in files:
        if f.name == "test_security.py":
            continue
        for line, what in violations(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            problems.append(f"{f.relative_to(ROOT)}:{line}: {what}")
    assert problems == []


# ------------------------------------------------------------------ hostile tars
def _hostile_tar(path: Path, outside: Path, video: bytes, jpeg: bytes) -> None:
    """Members that would write or read outside if anything extracted or followed them."""
    def add(tf, name, data=None, **kw):
        info = tarfile.TarInfo(name)
        for k, v in kw.items():
            setattr(info, k, v)
        if data is None:
            tf.addfile(info)
        else:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        add(tf, "00000000.jpg", jpeg)
        add(tf, "00000000.txt", b"fine")
        add(tf, "../../00000001.jpg", jpeg)
        add(tf, "../../00000001.txt", b"dot-dot")
        add(tf, f"{outside}/00000002.jpg", jpeg)
        add(tf, f"{outside}/00000002.txt", b"absolute")
        add(tf, "00000003.mp4", type=tarfile.SYMTYPE, linkname=str(outside / "secret.mp4"))
        add(tf, "00000003.txt", b"symlink to a real video outside")
        add(tf, "00000004.jpg", type=tarfile.LNKTYPE, linkname="00000000.jpg")
        add(tf, "00000004.txt", b"hard link")
        add(tf, "00000005.jpg", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add(tf, "00000005.txt", b"device")
        add(tf, "sub/../../00000006.jpg", jpeg)
        add(tf, "sub/../../00000006.txt", b"dot-dot inside")


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_tar_members_are_errors_and_nothing_is_followed_or_written(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    write_video(outside / "secret.mp4", seed=1, n_frames=4, width=64, height=48)
    jpeg = encode_jpeg(render_image(1, 64, 48)[0])
    wds = tmp_path / "wds"
    wds.mkdir()
    _hostile_tar(wds / "00000.tar", outside, (outside / "secret.mp4").read_bytes(), jpeg)
    before = _tree(tmp_path)
    cwd = os.getcwd()
    os.chdir(wds)
    try:
        refs = {r.key: r for r in list_samples(SourceConfig(name="x", format="video2dataset", path=str(wds)))}
    finally:
        os.chdir(cwd)
    assert _tree(tmp_path) == before
    assert refs["00000000"].error == "" and read_media(refs["00000000"]) == jpeg
    for key in ("00000001", "00000002", "00000006"):
        assert refs[key].error.startswith("unsafe member path"), refs[key]
    for key in ("00000003", "00000004", "00000005"):     # links and devices are never media
        assert refs[key].error == "no media in sample" and refs[key].uri == "", refs[key]


def test_shard_reader_and_validator_never_extract(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    data = tmp_path / "data"
    data.mkdir()
    jpeg = encode_jpeg(render_image(2, 64, 48)[0])
    _hostile_tar(data / "traj-000000.tar", outside, b"", jpeg)
    before = _tree(tmp_path)
    cwd = os.getcwd()
    os.chdir(data)
    try:
        problems = validate_dataset(data)
        with pytest.raises(Exception):
            list(read_dataset(data))     # no traj.json members: not a trajectory shard
    finally:
        os.chdir(cwd)
    assert problems
    assert _tree(tmp_path) == before


# ------------------------------------------------------------------ decoders
PEAK_CHILD = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[3])
from dataengine.config import DecodeConfig
from dataengine.media.decode import DecodeError, decode_media
data = open(sys.argv[1], "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
src = sys.argv[1] if sys.argv[2] == "video-path" else data
try:
    decode_media(src, sys.argv[2].split("-")[0], DecodeConfig())
    reason = ""
except DecodeError as e:
    reason = str(e)
print(json.dumps({"reason": reason, "growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


@pytest.mark.parametrize("kind,make,media_type", [
    ("png-30000", lambda: png_bomb(30000, 30000), "image"),
    ("png-9000", lambda: png_bomb(9000, 9000), "image"),
    ("video-8200-bytes", lambda: video_bomb(8200, 8200), "video"),
    ("video-8200-path", lambda: video_bomb(8200, 8200), "video-path"),
])
def test_decompression_bombs_are_refused_before_decoding(tmp_path, kind, make, media_type):
    path = tmp_path / kind
    path.write_bytes(make())
    assert path.stat().st_size < 400_000
    out = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(path), media_type, str(ROOT)],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "too large" in result["reason"], result
    # one decoded frame would be 0.2-2.7 GB; refusing from the headers costs a few MB
    assert result["growth_mb"] < 100, result


def test_pixel_limit_follows_the_config():
    jpeg = encode_jpeg(render_image(3, 160, 120)[0])
    assert decode_media(jpeg, "image", DecodeConfig()).frames.shape[0] == 1
    with pytest.raises(DecodeError, match="too large: 160x120"):
        decode_media(jpeg, "image", DecodeConfig(max_source_pixels=160 * 120 - 1))


@pytest.fixture
def http_hits():
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


def test_playlists_named_mp4_open_no_url_and_no_file(tmp_path, http_hits):
    port, hits = http_hits
    target = tmp_path / "target.mp4"
    write_video(target, seed=2, n_frames=8, width=64, height=48)
    playlist = HLS_PLAYLIST.replace(b"127.0.0.1:9", f"127.0.0.1:{port}".encode())
    assert b"#EXTM3U" in playlist and str(port).encode() in playlist
    ffconcat = f"ffconcat version 1.0\nfile {target}\nfile http://127.0.0.1:{port}/b.mp4\n".encode()
    for name, data in (("playlist.mp4", playlist), ("concat.mp4", ffconcat)):
        (tmp_path / name).write_bytes(data)
        for src in (data, str(tmp_path / name)):
            with pytest.raises(DecodeError, match="not a decodable video"):
                decode_media(src, "video", DecodeConfig())
    assert hits == []


def test_only_still_image_formats_are_read():
    with pytest.raises(DecodeError, match="unrecognised image format"):
        decode_media(EPS_IMAGE, "image", DecodeConfig())
    from PIL import Image

    gif = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(gif, format="GIF")
    with pytest.raises(DecodeError, match="unrecognised image format"):
        decode_media(gif.getvalue(), "image", DecodeConfig())
