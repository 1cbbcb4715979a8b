"""Atomic files and directories: the user's umask, a directory replaced in one rename, leftovers cleaned.

Before: files came out 0600 and directories 0700 whatever the umask; replacing a head directory took two
renames (a reader or a kill between them found no head); temp leftovers of killed writers stayed for ever.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from storage.atomic import atomic_dir, atomic_write_text, clean_leftovers

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize(("mask", "fmode", "dmode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o002, 0o664, 0o775)])
def test_files_and_directories_follow_the_umask(tmp_path, umask, mask, fmode, dmode):
    umask(mask)
    f = atomic_write_text(tmp_path / "a.json", "{}")
    assert stat.S_IMODE(f.stat().st_mode) == fmode
    with atomic_dir(tmp_path / "head") as d:
        (d / "head.json").write_text("{}")
    assert stat.S_IMODE((tmp_path / "head").stat().st_mode) == dmode


READER = ("import os, sys\np = sys.argv[1] + '/head.json'\nmisses = 0\nprint('ready', flush=True)\n"
          "while not os.path.exists(sys.argv[2]):\n    try:\n        open(p).read()\n"
          "    except FileNotFoundError:\n        misses += 1\nprint(misses)")


def test_a_replaced_directory_is_never_missing_for_a_reader(tmp_path):
    head = tmp_path / "head"
    with atomic_dir(head) as d:
        (d / "head.json").write_text("0")
    reader = subprocess.Popen([sys.executable, "-c", READER, str(head), str(tmp_path / "stop")], stdout=subprocess.PIPE,
                              text=True)
    assert reader.stdout.readline().strip() == "ready"
    try:
        for i in range(300):
            with atomic_dir(head) as d:
                (d / "head.json").write_text(str(i))
    finally:
        (tmp_path / "stop").touch()
    assert reader.communicate(timeout=30)[0].strip() == "0"  # the two-rename version missed it hundreds of times
    assert (head / "head.json").read_text() == "299"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head", "stop"]


def test_leftovers_of_a_killed_writer_are_cleaned_by_the_next_write(tmp_path):
    code = ("import sys, time\nfrom storage.atomic import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as d:\n    (d / 'head.json').write_text('partial'); print('in', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "head")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "in"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".head.{proc.pid}.")
    (tmp_path / ".head.old").mkdir()  # the earlier two-rename scheme's leftover
    with atomic_dir(tmp_path / "head") as d:
        (d / "head.json").write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]


def test_a_live_writer_temp_is_kept(tmp_path):
    live = tmp_path / f".head.{os.getpid()}.abc.tmp"
    live.mkdir()
    assert clean_leftovers(tmp_path / "head") == [] and live.exists()


def test_a_report_directory_is_replaced_as_a_whole(tmp_path):
    from storage.atomic import atomic_write_files

    out = tmp_path / "report"
    atomic_write_files(out, {"report.md": b"old", "plots/a.png": b"1", "stale.json": b"{}"})
    atomic_write_files(out, {"report.md": b"new", "plots/a.png": b"2"})
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["plots/a.png", "report.md"]
    assert (out / "report.md").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
