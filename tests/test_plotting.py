"""kerascnn.plotting: figures, output-path checks, atomic saves."""

from __future__ import annotations

import os

import pytest

from kerascnn.checks import InputError
from kerascnn.plotting import Plot, check_output_path, figure, finish, save_figure


def _drawn():
    fig = figure(2.0, 1.5)
    fig.subplots().plot([0, 1, 2], [2, 0, 1])
    return fig


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"),
                                           (".svg", b"<?xml"), (".jpg", b"\xff\xd8")])
def test_save_figure_writes_the_format_of_the_suffix(tmp_path, suffix, magic):
    path = save_figure(_drawn(), tmp_path / "sub" / f"curve{suffix}")
    assert path.read_bytes().startswith(magic)
    assert os.listdir(tmp_path / "sub") == [f"curve{suffix}"]  # no temporary left behind
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_save_figure_failure_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old")
    fig = _drawn()

    def broken(*args, **kwargs):
        raise RuntimeError("renderer died")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError, match="renderer died"):
        save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["keep.png"]


def test_save_figure_refuses_a_suffix_that_is_no_picture(tmp_path):
    with pytest.raises(InputError, match=r"must end in .png.*Received: output='.*curve.txt'"):
        save_figure(_drawn(), tmp_path / "curve.txt")
    assert not list(tmp_path.iterdir())


def test_finish_saves_only_when_asked(tmp_path):
    plot = finish(_drawn(), "t", {"a": 1})
    assert isinstance(plot, Plot) and plot.path is None and plot.data == {"a": 1}
    plot = finish(_drawn(), "t", {}, tmp_path / "x.png")
    assert plot.path == tmp_path / "x.png" and plot.path.is_file()


def test_check_output_path(tmp_path):
    assert check_output_path(tmp_path / "new" / "deeper" / "a.PNG") == tmp_path / "new" / \
        "deeper" / "a.PNG"
    with pytest.raises(InputError, match=r"picture file ending in .png.*Received: output="):
        check_output_path(tmp_path / "a.txt")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        check_output_path(tmp_path / "dir.png")
    (tmp_path / "old.png").write_bytes(b"x")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        check_output_path(tmp_path / "old.png")
    assert check_output_path(tmp_path / "old.png", overwrite=True).name == "old.png"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="cannot be made: .*file' is a file"):
        check_output_path(tmp_path / "file" / "a.png")
    with pytest.raises(InputError, match=r"picture file ending in .pdf. Received: plot="):
        check_output_path(tmp_path / "a.png", suffixes=(".pdf",), name="plot")


def test_check_output_path_refuses_a_folder_it_cannot_write(tmp_path, monkeypatch):
    # the tests run as root, for whom every folder is writable: fake the answer
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(tmp_path))
    with pytest.raises(InputError, match="is not writable"):
        check_output_path(tmp_path / "sub" / "a.png")
