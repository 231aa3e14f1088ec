"""Listing input samples and reading their media, on small fake layouts built here."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataengine.config import SourceConfig
from dataengine.sources import (IMAGE_EXTS, VIDEO_EXTS, MediaError, SampleRef, SeenKeys, list_samples,
                                read_media)

KEY = re.compile(r"^[A-Za-z0-9_-]+$")


# ------------------------------------------------------------------ helpers
def fake_media(tag: str, n: int = 700) -> bytes:
    """Distinct, non-decodable bytes: read_media must return exactly these."""
    return (tag.encode() * (n // max(len(tag), 1) + 1))[:n]


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def make_tar(path: Path, members: list[tuple[str, bytes | str | None]]) -> Path:
    """A plain tar; ``None`` content makes a directory, a ``"->target"`` str a symlink."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime, info.mode = 0, 0o444
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif isinstance(data, str) and data.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tf.addfile(info)
            else:
                raw = data.encode() if isinstance(data, str) else data
                info.size = len(raw)
                tf.addfile(info, io.BytesIO(raw))
    return path


def sample_members(key: str, media: bytes | None, ext: str = "jpg", status: str = "success",
                   caption: str = "a caption") -> list[tuple[str, bytes | str]]:
    meta = {"key": key, "status": status, "caption": caption,
            "error_message": None if status == "success" else "HTTP Error 404: Not Found"}
    out: list[tuple[str, bytes | str]] = []
    if media is not None:
        out.append((f"{key}.{ext}", media))
    out += [(f"{key}.json", json.dumps(meta, indent=4)), (f"{key}.txt", caption)]
    return out


def listing(src: SourceConfig, **kw) -> list[SampleRef]:
    refs = list(list_samples(src, **kw))
    check_invariants(refs)
    return refs


def check_invariants(refs: list[SampleRef]) -> None:
    keys = [r.key for r in refs]
    assert len(keys) == len(set(keys)), "keys must be unique"
    assert all(KEY.match(k) for k in keys), keys
    assert [r.index for r in refs] == list(range(len(refs)))
    for r in refs:
        for text in (r.key, r.uri, r.caption, r.meta, r.error):
            text.encode("utf-8")        # no lone surrogates: Parquet and JSON writers must take them
        assert r.media_type in ("video", "image", "")
        assert "\n" not in r.error
        json.loads(r.meta)
        if not r.error:
            assert r.uri and r.ext and r.media_type and r.size >= 0


def assert_stable(src: SourceConfig) -> list[SampleRef]:
    """Deterministic and ``limit`` is a prefix of the full listing."""
    a, b = listing(src), listing(src)
    assert a == b
    for n in (0, 1, 2, len(a) + 5):
        assert listing(src, limit=n) == a[:n]
    return a


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# ------------------------------------------------------------------ folder
@pytest.fixture
def media_folder(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    write(root / "a clip.mp4", fake_media("A"))
    write(root / "a clip.txt", "  a person walks\n")
    write(root / "sub dir" / "ünïcode vidéo.webm", fake_media("U"))
    write(root / "sub dir" / "ünïcode vidéo.txt", "café".encode())
    write(root / "sub dir" / "deep" / "x.MOV", fake_media("M"))
    write(root / "bad caption.jpg", fake_media("B"))
    write(root / "bad caption.txt", b"caf\xe9 \xff\xfe")
    write(root / "x y.png", fake_media("P1"))
    write(root / "x_y.png", fake_media("P2"))
    write(root / "x-y" / "z.png", fake_media("Z"))
    write(root / "a-c.mp4", fake_media("C"))
    write(root / "a" / "b.mp4", fake_media("D"))
    write(root / "empty.mp4", b"")
    write(root / "UP.JPG", fake_media("J"))
    write(root / ".hidden.mp4", fake_media("H"))
    write(root / ".cache" / "y.mp4", fake_media("H"))
    write(root / "notes.md", "not media")
    write(root / "orphan.txt", "caption of nothing")
    return root


def test_folder_listing(media_folder: Path) -> None:
    refs = assert_stable(SourceConfig(name="local", format="folder", path=str(media_folder)))
    by_key = {r.key: r for r in refs}
    # byte-wise order of relative paths: "a clip" < "a-c.mp4" < "a/b.mp4" ('\x20' < '-' < '/')
    assert [r.key for r in refs] == ["UP", "a_clip", "a-c", "a_b", "bad_caption", "empty",
                                     "sub_dir_deep_x", "sub_dir_unicode_video", "x_y", "x-y_z", "x_y-1"]
    assert by_key["a_clip"].caption == "a person walks" and by_key["a_clip"].media_type == "video"
    assert by_key["sub_dir_unicode_video"].caption == "café"
    assert by_key["sub_dir_unicode_video"].ext == "webm"
    assert by_key["sub_dir_deep_x"].ext == "mov" and by_key["UP"].ext == "jpg"
    assert by_key["bad_caption"].error == "caption is not valid UTF-8"
    assert by_key["empty"].size == 0 and by_key["empty"].error == ""
    # sanitised collisions: both files listed, neither is an error
    assert by_key["x_y"].uri.endswith("x y.png") and by_key["x_y-1"].uri.endswith("x_y.png")
    assert not by_key["x_y"].error and not by_key["x_y-1"].error
    assert all(r.source == "local" and r.offset == -1 for r in refs)
    for r in refs:
        if not r.error:
            assert read_media(r) == Path(r.uri).read_bytes()
            assert len(read_media(r)) == r.size
    assert read_media(by_key["x_y-1"]) == fake_media("P2")


def test_undecodable_file_names(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    write(folder / "ok.mp4", fake_media("K"))
    write(Path(os.fsdecode(bytes(folder) + b"/caf\xe9.mp4")), fake_media("L"))
    refs = assert_stable(SourceConfig(name="x", format="folder", path=str(folder)))
    assert [(r.key, r.error) for r in refs] == [("caf_", "file name is not valid UTF-8"), ("ok", "")]
    assert refs[0].uri.endswith("caf\\xe9.mp4")

    shards = tmp_path / "files"
    write(shards / "00000" / "0001.jpg", fake_media("M"))
    write(Path(os.fsdecode(bytes(shards) + b"/00000/0002\xff.jpg")), fake_media("N"))
    refs = assert_stable(SourceConfig(name="x", format="img2dataset", path=str(shards)))
    assert [r.key for r in refs] == ["0001", "0002_"]
    assert refs[1].error.startswith("file name is not valid UTF-8")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list_samples(SourceConfig(name="x", format="folder", path=str(tmp_path / "nope")))
    with pytest.raises(ValueError):
        list_samples(SourceConfig(name="x", format="zip", path=str(tmp_path)))
    assert listing(SourceConfig(name="x", format="folder", path=str(tmp_path))) == []


# ------------------------------------------------------------------ video2dataset
def test_video2dataset_tars(tmp_path: Path) -> None:
    root = tmp_path / "v2d"
    make_tar(root / "00000.tar", [
        *sample_members("00000000_00000", fake_media("v0"), "mp4"),
        *sample_members("00000001", None, status="failed_to_download"),
        ("00000002_00000.mp4", fake_media("v2")), ("00000002_00000.m4a", b"audio"),
        ("00000002_00000.json", "{}"),
        ("00000003_00000.m4a", b"audio only"), ("00000003_00000.txt", "x"),
        ("shard_dir", None), ("link.mp4", "->00000000_00000.mp4"),
    ])
    make_tar(root / "00001.tar", sample_members("00001000_00000", fake_media("v3"), "webm"))
    write(root / "00000.parquet", b"ignored for video2dataset")
    write(root / "00000_stats.json", "{}")
    refs = assert_stable(SourceConfig(name="panda", format="video2dataset", path=str(root)))
    assert [r.key for r in refs] == ["00000000_00000", "00000001", "00000002_00000", "00000003_00000",
                                     "00001000_00000"]
    ok, failed, with_audio, audio_only, other = refs
    assert ok.uri == f"{root / '00000.tar'}#00000000_00000.mp4" and ok.offset > 0
    assert ok.caption == "a caption" and json.loads(ok.meta)["status"] == "success"
    assert read_media(ok) == fake_media("v0")
    assert failed.error == "download failed: failed_to_download: HTTP Error 404: Not Found"
    assert failed.uri == "" and failed.media_type == ""
    assert with_audio.ext == "mp4" and read_media(with_audio) == fake_media("v2")
    assert audio_only.error == "unsupported media type .m4a"
    assert other.ext == "webm" and read_media(other) == fake_media("v3")
    with pytest.raises(MediaError, match="download failed"):
        read_media(failed)


def test_video2dataset_files_layout_crashed_shard(tmp_path: Path) -> None:
    root = tmp_path / "panda_files"
    for key, tag in (("0000000_00000", "f0"), ("0000000_00001", "f1")):
        write(root / "00000" / f"{key}.mp4", fake_media(tag))
        write(root / "00000" / f"{key}.txt", f"caption {tag}")
        clip_meta = {"status": "success", "clips": "[('0:00:01.000', '0:00:02.000')]"}
        write(root / "00000" / f"{key}.json", json.dumps(clip_meta))
    write(root / "00000" / "0000001.txt", "")
    write(root / "00000" / "0000001.json", json.dumps({"status": "failed_to_download", "error_message": "private"}))
    write(root / "00001" / "0000100_00000.mp4", fake_media("f2"))
    write(root / "00000_stats.json", json.dumps({"count": 3}))
    write(root / "config.yaml", "a: 1")
    # shard 00001 crashed: truncated parquet, no stats file
    pq.write_table(pa.table({"key": ["0000100"], "status": ["success"]}), root / "00001.parquet")
    data = (root / "00001.parquet").read_bytes()
    (root / "00001.parquet").write_bytes(data[: len(data) // 2])
    refs = assert_stable(SourceConfig(name="panda", format="video2dataset", path=str(root)))
    assert [r.key for r in refs] == ["0000000_00000", "0000000_00001", "0000001", "0000100_00000"]
    assert refs[0].caption == "caption f0" and read_media(refs[0]) == fake_media("f0")
    assert refs[2].error == "download failed: failed_to_download: private"
    assert not refs[3].error and read_media(refs[3]) == fake_media("f2")


# ------------------------------------------------------------------ img2dataset
def i2d_parquet(path: Path, rows: list[tuple[str, str, str | None]]) -> None:
    pq.write_table(pa.table({
        "url": [f"http://x/{k}.jpg" for k, _, _ in rows], "caption": [f"cap {k}" for k, _, _ in rows],
        "key": [k for k, _, _ in rows], "status": [s for _, s, _ in rows],
        "error_message": [e for _, _, e in rows], "width": [32 if s == "success" else None for _, s, _ in rows],
    }), path)


def test_img2dataset_tar_and_parquet(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "cc3m"
    make_tar(root / "00000.tar", sample_members("000000000", fake_media("i0"))
             + sample_members("000000002", fake_media("i2")))
    i2d_parquet(root / "00000.parquet", [("000000000", "success", None), ("000000001", "failed_to_download",
                                                                         "timed out\nafter 10s"),
                                          ("000000002", "success", None)])
    make_tar(root / "00001.tar", sample_members("000010000", fake_media("i3")))
    i2d_parquet(root / "00001.parquet", [("000010000", "success", None), ("000010001", "failed_to_resize", "x")])
    data = (root / "00001.parquet").read_bytes()
    (root / "00001.parquet").write_bytes(data[:-20])      # truncated: ignored with a warning
    write(root / "00000_stats.json", "{}")
    with caplog.at_level(logging.WARNING, logger="dataengine.sources"):
        refs = assert_stable(SourceConfig(name="cc3m", format="img2dataset", path=str(root)))
    assert any("00001.parquet" in m for m in caplog.messages)
    assert [r.key for r in refs] == ["000000000", "000000002", "000000001", "000010000"]
    failed = refs[2]
    assert failed.error == "download failed: failed_to_download: timed out after 10s"
    assert failed.caption == "cap 000000001" and json.loads(failed.meta)["url"] == "http://x/000000001.jpg"
    assert [read_media(r) for r in (refs[0], refs[1], refs[3])] == [fake_media(t) for t in ("i0", "i2", "i3")]
    assert refs[0].media_type == "image" and refs[0].ext == "jpg"


def test_img2dataset_files_layout(tmp_path: Path) -> None:
    root = tmp_path / "cc12m"
    for key in ("000000000", "000000003"):
        write(root / "00000" / f"{key}.jpg", fake_media(key))
        write(root / "00000" / f"{key}.txt", f"cap {key}")
        write(root / "00000" / f"{key}.json", json.dumps({"key": key, "status": "success"}))
    i2d_parquet(root / "00000.parquet", [("000000000", "success", None), ("000000001", "failed_to_download", "404"),
                                         ("000000003", "success", None)])
    i2d_parquet(root / "00001.parquet", [("000010000", "failed_to_download", "dns")])   # shard without images
    refs = assert_stable(SourceConfig(name="cc12m", format="img2dataset", path=str(root)))
    assert [(r.key, r.error) for r in refs] == [
        ("000000000", ""), ("000000003", ""), ("000000001", "download failed: failed_to_download: 404"),
        ("000010000", "download failed: failed_to_download: dns")]
    assert refs[1].caption == "cap 000000003" and read_media(refs[1]) == fake_media("000000003")


# ------------------------------------------------------------------ tar safety and damage
def test_unsafe_member_paths(tmp_path: Path) -> None:
    root = tmp_path / "evil" / "wds"
    make_tar(root / "00000.tar", [
        ("../evil.jpg", fake_media("E")), ("../evil.txt", "pwned"),
        ("/tmp/abs_evil.jpg", fake_media("F")),
        ("./ok/0001.jpg", fake_media("O")), ("./ok/0001.txt", "fine"),
    ])
    before = tree(tmp_path)
    refs = assert_stable(SourceConfig(name="x", format="img2dataset", path=str(root)))
    assert tree(tmp_path) == before, "listing must not write anything"
    assert not (tmp_path / "evil" / "evil.jpg").exists()
    assert [r.key for r in refs] == ["evil", "abs_evil", "0001"]
    assert refs[0].error == "unsafe member path '../evil.jpg'"
    assert refs[1].error == "unsafe member path '/tmp/abs_evil.jpg'"
    with pytest.raises(MediaError):
        read_media(refs[0])
    assert refs[2].caption == "fine" and read_media(refs[2]) == fake_media("O")
    read_media(refs[2])
    assert tree(tmp_path) == before


def _three_sample_tar(path: Path) -> tuple[Path, list[int]]:
    """Tar of samples k0..k2 (1000-byte jpg + txt); also returns where each jpg's data starts."""
    members = []
    for i in range(3):
        members += [(f"k{i}.jpg", fake_media(f"t{i}", 1000)), (f"k{i}.txt", f"caption {i}")]
    make_tar(path, members)
    with tarfile.open(path) as tf:
        starts = [m.offset_data for m in tf.getmembers() if m.name.endswith(".jpg")]
    return path, starts


@pytest.mark.parametrize("cut, keys, bad", [
    ("mid_member", ["k0", "k1", "k2", "next"], "k2"),        # k2.jpg data cut
    ("mid_header", ["k0", "k1", "k2", "next"], "k2"),        # k2.jpg header cut, its name still readable
    ("member_boundary", ["k0", "k1", "k2", "next"], "k2"),   # end marker missing: last sample may be short
    ("short_header", ["k0", "k1", "next"], "k1"),            # k2's name lost: k1 may have lost members
    ("in_padding", ["k0", "k1", "next"], "k1"),
])
def test_truncated_tar(tmp_path: Path, cut: str, keys: list[str], bad: str) -> None:
    root = tmp_path / "wds"
    tar, starts = _three_sample_tar(root / "00000.tar")
    make_tar(root / "00001.tar", sample_members("next", fake_media("N")))
    data = tar.read_bytes()
    with tarfile.open(tar) as tf:
        last_txt = [m for m in tf.getmembers() if m.name == "k2.txt"][0]
        end_of_members = last_txt.offset_data + 512
    header = starts[2] - 512
    where = {"mid_member": starts[2] + 300, "mid_header": header + 312, "member_boundary": end_of_members,
             "short_header": header + 50, "in_padding": header - 200}[cut]
    tar.write_bytes(data[:where])
    refs = assert_stable(SourceConfig(name="x", format="img2dataset", path=str(root)))
    assert [r.key for r in refs] == keys
    assert [r.key for r in refs if r.error] == [bad]
    assert next(r for r in refs if r.error).error.startswith("truncated tar:")
    assert read_media(refs[0]) == fake_media("t0", 1000)
    assert read_media(refs[-1]) == fake_media("N")


def test_unreadable_tar_is_one_error(tmp_path: Path) -> None:
    root = tmp_path / "wds"
    write(root / "00000.tar", b"")
    write(root / "00001.tar", b"this is not a tar file" * 40)
    make_tar(root / "00002.tar", sample_members("good", fake_media("G")))
    refs = assert_stable(SourceConfig(name="x", format="video2dataset", path=str(root)))
    assert [r.key for r in refs] == ["00000", "00001", "good"]
    assert all(r.error.startswith("unreadable tar") for r in refs[:2]) and not refs[2].error


def test_duplicate_keys(tmp_path: Path) -> None:
    root = tmp_path / "wds"
    make_tar(root / "00000.tar", sample_members("k", fake_media("a")) + sample_members("m", fake_media("b"))
             + sample_members("k", fake_media("c"))
             + [("m.jpg", fake_media("d")), ("m.jpg", fake_media("e"))])   # same key, same ext, consecutive
    make_tar(root / "00001.tar", sample_members("k", fake_media("f")))
    refs = assert_stable(SourceConfig(name="x", format="img2dataset", path=str(root)))
    assert [(r.key, r.error) for r in refs] == [
        ("k", ""), ("m", ""), ("k-1", "duplicate key k"), ("m-1", "duplicate key m"), ("m-2", "duplicate key m"),
        ("k-2", "duplicate key k")]
    assert read_media(refs[0]) == fake_media("a")


# ------------------------------------------------------------------ Panda-70M CSV
def test_panda_csv(tmp_path: Path) -> None:
    clips = tmp_path / "clips"
    rows = [
        ["-Z8x_Qy0aB4", "https://www.youtube.com/watch?v=-Z8x_Qy0aB4",
         "[['0:00:16.300', '0:00:32.566'], ['0:01:00.000', '0:01:05.500']]",
         str(['A man says "hello" to the camera.', "It's a dog's toy."]),
         "[0.51, 0.47]", "[['desirable', 0.9], ['desirable', 0.8]]", "[[['0:00:16.300', '0:00:32.566']], []]"],
        ["abc", "https://www.youtube.com/watch?v=abc", "[['0:00:00.000', '0:00:03.000']]",
         "['a plain caption']", "[0.3]", "[['x', 1]]", "[[]]"],
        ["broken", "u", "[['0:00:00.000'", "['c']", "[0.1]", "[]", "[]"],
        ["../up", "u", "[['0:00:00.000', '0:00:01.000']]", "['c']", "[0.1]", "[]", "[]"],
        ["abc", "https://www.youtube.com/watch?v=abc", "[['0:00:00.000', '0:00:03.000']]",
         "['again']", "[0.3]", "[['x', 1]]", "[[]]"],
    ]
    with open(tmp_path / "panda.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["videoID", "url", "timestamp", "caption", "matching_score", "desirable_filtering",
                    "shot_boundary_detection"])
        w.writerows(rows)
    write(clips / "-Z8x_Qy0aB4.0.mp4", fake_media("p0"))     # clip 1 of this video is missing
    write(clips / "abc.0.mkv", fake_media("p2"))
    write(clips / "up.0.mp4", fake_media("p3"))
    src = SourceConfig(name="panda", format="panda_csv", path=str(clips), csv=str(tmp_path / "panda.csv"))
    refs = assert_stable(src)
    assert [r.key for r in refs] == ["-Z8x_Qy0aB4_00000", "-Z8x_Qy0aB4_00001", "abc_00000", "broken",
                                     "___up_00000", "abc_00000-1"]
    first, missing, abc, broken, unsafe, dup = refs
    assert first.caption == 'A man says "hello" to the camera.' and first.media_type == "video"
    assert read_media(first) == fake_media("p0")
    meta = json.loads(first.meta)
    assert meta["timestamp"] == ["0:00:16.300", "0:00:32.566"] and meta["matching_score"] == 0.51
    assert meta["videoID"] == "-Z8x_Qy0aB4" and meta["clip"] == 0
    assert missing.error == f"clip file not found: {clips / '-Z8x_Qy0aB4.1.mp4'}"
    assert missing.caption == "It's a dog's toy." and missing.uri == ""
    assert abc.ext == "mkv" and read_media(abc) == fake_media("p2")
    assert broken.error.startswith("bad timestamp cell at CSV line 4")
    assert unsafe.error.startswith("unsafe video id '../up'")
    assert dup.error == "duplicate key abc_00000"

    with pytest.raises(ValueError, match="csv"):
        list_samples(SourceConfig(name="p", format="panda_csv", path=str(clips)))


def test_metadata_json_cannot_hold_stays_text_or_is_the_samples_error(tmp_path: Path) -> None:
    """Cells and sidecars that parse but JSON cannot hold (tuple keys, keys of mixed types) or that nest
    deeper than Python parses are one sample's matter, never the listing's end."""
    clips = tmp_path / "clips"
    with open(tmp_path / "panda.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["videoID", "url", "timestamp", "caption", "matching_score"])
        w.writerow(["v1", "u", "[['0:00:00.000', '0:00:01.000']]", "['c1']", "{(1, 2): 0.5}"])
        w.writerow(["v2", "u", "[['0:00:00.000', '0:00:01.000']]", "['c2']", "{1: 0.5, 'a': 0.2}"])
    write(clips / "v1.0.mp4", fake_media("v1"))
    write(clips / "v2.0.mp4", fake_media("v2"))
    refs = assert_stable(SourceConfig(name="panda", format="panda_csv", path=str(clips),
                                      csv=str(tmp_path / "panda.csv")))
    assert [(r.key, r.error) for r in refs] == [("v1_00000", ""), ("v2_00000", "")]
    assert [json.loads(r.meta)["matching_score"] for r in refs] == ["{(1, 2): 0.5}", "{1: 0.5, 'a': 0.2}"]

    root = tmp_path / "i2d"
    write(root / "00000" / "000000000.jpg", fake_media("a"))
    write(root / "00000" / "000000000.json", "[" * 100000)
    write(root / "00000" / "000000001.jpg", fake_media("b"))
    refs = assert_stable(SourceConfig(name="i2d", format="img2dataset", path=str(root)))
    assert [r.key for r in refs] == ["000000000", "000000001"]
    assert refs[0].error.startswith("metadata JSON is invalid") and refs[1].error == ""


# ------------------------------------------------------------------ read_media and keys
def test_read_media_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "v.mp4", fake_media("R", 5000))
    ref = SampleRef(key="v", source="s", uri=str(path), media_type="video", ext="mp4", index=0, size=5000)
    assert read_media(ref) == fake_media("R", 5000)
    with pytest.raises(MediaError, match="too large"):
        read_media(ref, max_bytes=100)
    path.write_bytes(fake_media("R", 10))
    with pytest.raises(MediaError, match="short read"):
        read_media(ref)
    path.unlink()
    with pytest.raises(MediaError, match="not found"):
        read_media(ref)
    with pytest.raises(MediaError, match="no media"):
        read_media(SampleRef(key="n", source="s", uri="", media_type="", ext="", index=0))

    tar = make_tar(tmp_path / "a#b.tar", [("x#1.jpg", fake_media("T", 3000))])
    (member,) = listing(SourceConfig(name="s", format="img2dataset", path=str(tar)))
    assert member.uri == f"{tar}#x#1.jpg" and read_media(member) == fake_media("T", 3000)
    tar.write_bytes(tar.read_bytes()[: member.offset + 100])
    with pytest.raises(MediaError, match="short read"):
        read_media(member)


def test_seen_keys_merges_and_stays_exact() -> None:
    seen = SeenKeys()
    keys = [f"{i:09d}" for i in range(40_000)]          # past the first merge threshold
    assert all(seen.claim(k) == (k, False) for k in keys)
    assert seen.claim("000000007") == ("000000007-1", True)
    assert seen.claim("000000007") == ("000000007-2", True)
    assert seen.claim("000039999") == ("000039999-1", True)
    assert "000040000" not in seen


def test_extension_sets() -> None:
    assert {"mp4", "webm", "mkv", "avi", "mov", "m4v"} == VIDEO_EXTS
    assert {"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"} == IMAGE_EXTS


def test_parquet_rows_the_tar_does_not_hold_are_error_rows(tmp_path: Path) -> None:
    """img2dataset lists 4 downloads; its tar is cut inside the second: the two it never delivered end in
    the listing as errors (before, they were in no manifest); a shard whose tar is gone likewise."""
    root = tmp_path / "cc3m"
    members = []
    for k in ("000000000", "000000001", "000000002", "000000003"):
        members += sample_members(k, fake_media(k, 1000))
    tar = make_tar(root / "00000.tar", members)
    with tarfile.open(tar) as tf:
        cut = next(m for m in tf.getmembers() if m.name == "000000001.jpg").offset_data + 300
    tar.write_bytes(tar.read_bytes()[:cut])
    i2d_parquet(root / "00000.parquet", [(k, "success", None) for k in ("000000000", "000000001", "000000002",
                                                                          "000000003")])
    i2d_parquet(root / "00001.parquet", [("000010000", "success", None)])        # its tar is missing
    refs = assert_stable(SourceConfig(name="cc3m", format="img2dataset", path=str(root)))
    assert [r.key for r in refs] == ["000000000", "000000001", "000000002", "000000003", "000010000"]
    assert not refs[0].error and refs[1].error.startswith("truncated tar:")
    for r in refs[2:]:
        assert r.error.startswith("listed as downloaded in 0000") and r.error.endswith("but missing from its tar")


def test_metadata_json_that_is_not_an_object_is_the_samples_error(tmp_path: Path) -> None:
    root = tmp_path / "wds"
    make_tar(root / "00000.tar", sample_members("a", fake_media("a"))
             + [("b.jpg", fake_media("b")), ("b.json", '["not", "a", "dict"]')]
             + [("c.jpg", fake_media("c")), ("c.json", "null")] + sample_members("d", fake_media("d")))
    refs = assert_stable(SourceConfig(name="x", format="img2dataset", path=str(root)))
    assert {r.key: r.error for r in refs} == {"a": "", "b": "metadata JSON is list, not an object",
                                              "c": "metadata JSON is null, not an object", "d": ""}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX thing")
def test_a_named_pipe_as_caption_or_metadata_does_not_block_the_listing(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(folder / "a.jpg", fake_media("a"))
    os.mkfifo(folder / "a.txt")
    write(folder / "b.jpg", fake_media("b"))
    refs = listing(SourceConfig(name="local", format="folder", path=str(folder)))
    assert [(r.key, r.error) for r in refs] == [("a", "cannot read caption: a.txt is not a regular file"),
                                                ("b", "")]
    files = tmp_path / "wds" / "00000"
    write(files / "000000000.jpg", fake_media("x"))
    os.mkfifo(files / "000000000.json")
    refs = listing(SourceConfig(name="x", format="img2dataset", path=str(tmp_path / "wds")))
    assert len(refs) == 1 and "not a regular file" in refs[0].error


def test_a_folder_deeper_than_the_recursion_limit_is_listed(tmp_path: Path) -> None:
    import sys
    deep = tmp_path / "in"
    d = str(deep)
    os.mkdir(d)
    for _ in range(sys.getrecursionlimit() + 50):      # made one level at a time (makedirs recurses too)
        d += "/d"
        os.mkdir(d)
    try:
        write(Path(d) / "x.jpg", fake_media("x"))
        write(deep / "top.jpg", fake_media("t"))
        refs = listing(SourceConfig(name="local", format="folder", path=str(deep)))
        assert len(refs) == 2 and not any(r.error for r in refs)
        assert [read_media(r) for r in refs] == [fake_media("x"), fake_media("t")]     # byte order: d/... < top
    finally:    # removed one level at a time: pytest's own clean-up (shutil.rmtree) recurses and would fail
        for name in ("x.jpg",):
            if os.path.exists(os.path.join(d, name)):
                os.remove(os.path.join(d, name))
        while d != str(deep):
            os.rmdir(d)
            d = os.path.dirname(d)
