"""Output folders own only what vitlens wrote there and is unchanged (vitlens.outputs);
save_chart writes the names it is given; saved files get the umask's permissions."""

from __future__ import annotations

import json
import os
import stat

import altair as alt
import numpy as np
import pandas as pd
import pytest

from vitlens import SimilarityResult
from vitlens.figures import chart_paths, save_chart
from vitlens.outputs import CKA_OUTPUTS, OUT_MARKER, REPRODUCE_OUTPUTS, OutputFolder, check_out
from vitlens.reproduce import reproduce


def _result() -> SimilarityResult:
    return SimilarityResult(np.eye(2), ["a", "b"], ["a", "b"], {})


def _chart(title: str = ""):
    return alt.Chart(pd.DataFrame({"x": [0, 1], "y": [1, 0]}), title=title).mark_point().encode(
        x="x", y="y")


def _write_cka(out, overwrite=False):
    """What ``vitlens cka --out`` writes, through the folder."""
    folder = OutputFolder(out, overwrite)
    folder.check(CKA_OUTPUTS)
    folder.save_result(_result(), "cka.npz")
    folder.save_chart(_chart(), "cka")
    return folder


def _manifest(out) -> dict:
    return json.loads((out / OUT_MARKER).read_text())["files"]


# ---------------------------------------------------------------------------------------------
# the manifest
# ---------------------------------------------------------------------------------------------


def test_manifest_lists_each_file_as_written_and_own_files_are_replaced(tmp_path):
    out = tmp_path / "out"
    folder = OutputFolder(out)
    folder.check(CKA_OUTPUTS)
    assert not out.exists()  # nothing written before the first output
    folder.save_result(_result(), "cka.npz")
    assert list(_manifest(out)) == ["cka.npz"]  # recorded as it is written
    folder.save_chart(_chart(), "cka")
    files = _manifest(out)
    assert sorted(files) == ["cka.npz", "cka.png", "cka.svg"]
    for name, entry in files.items():
        assert entry["size"] == (out / name).stat().st_size and len(entry["sha256"]) == 64
    _write_cka(out)  # its own, unchanged outputs: replaced
    assert sorted(p.name for p in out.iterdir()) == [OUT_MARKER, *CKA_OUTPUTS]


@pytest.mark.parametrize("change", ["edited", "replaced_same_size", "symlink"])
def test_a_file_changed_since_vitlens_wrote_it_is_the_users(tmp_path, change):
    out = tmp_path / "out"
    _write_cka(out)
    png = out / "cka.png"
    if change == "edited":
        png.write_bytes(b"my retouched figure")
    elif change == "replaced_same_size":
        png.write_bytes(bytes(len(png.read_bytes())))
    else:
        (tmp_path / "mine.png").write_bytes(b"my figure elsewhere")
        png.unlink()
        png.symlink_to(tmp_path / "mine.png")
    before = png.read_bytes()
    with pytest.raises(ValueError, match=r"already holds cka\.png, which vitlens did not write.*"
                                         r"Pick another folder, move or remove that file"):
        check_out(out, CKA_OUTPUTS)
    with pytest.raises(ValueError, match=r"cka\.png"):  # the write itself checks again
        OutputFolder(out).save_chart(_chart(), "cka")
    assert png.read_bytes() == before
    if change == "symlink":
        _write_cka(out, overwrite=True)  # asked for: the link is replaced, its target kept
        assert not png.is_symlink()
        assert (tmp_path / "mine.png").read_bytes() == b"my figure elsewhere"


def test_two_writers_in_one_folder_keep_each_others_entries(tmp_path):
    first, second = OutputFolder(tmp_path), OutputFolder(tmp_path)
    first.save_result(_result(), "a.npz")
    second.save_result(_result(), "b.npz")
    first.write_text("notes.md", "vitlens's notes")
    assert sorted(_manifest(tmp_path)) == ["a.npz", "b.npz", "notes.md"]
    check_out(tmp_path, ("a.npz", "b.npz", "notes.md"))


def test_one_owned_file_does_not_make_the_others_replaceable(tmp_path):
    out = tmp_path / "out"
    folder = OutputFolder(out)
    folder.save_result(_result(), "cka.npz")
    (out / "cka.png").write_bytes(b"my own figure")
    check_out(out, ("cka.npz",))  # vitlens's
    with pytest.raises(ValueError, match=r"cka\.png"):
        check_out(out, CKA_OUTPUTS)
    assert (out / "cka.png").read_bytes() == b"my own figure"


@pytest.mark.parametrize("legacy", ["vitlens writes its outputs in this folder; a later run with "
                                    "the same --out replaces them.\n", ""])
def test_a_legacy_marker_owns_nothing(tmp_path, legacy):
    (tmp_path / OUT_MARKER).write_text(legacy)
    (tmp_path / "cka.png").write_bytes(b"my own figure")
    with pytest.raises(ValueError, match=r"cka\.png"):
        check_out(tmp_path, CKA_OUTPUTS)
    (tmp_path / "cka.png").unlink()
    _write_cka(tmp_path)  # the legacy marker becomes a manifest
    assert sorted(_manifest(tmp_path)) == sorted(CKA_OUTPUTS)


def test_a_foreign_file_at_the_manifests_name_is_left_alone(tmp_path):
    (tmp_path / OUT_MARKER).write_text('{"my": "settings"}')
    with pytest.raises(ValueError, match=r"not a manifest vitlens wrote"):
        check_out(tmp_path, CKA_OUTPUTS)
    with pytest.raises(ValueError, match=r"not a manifest vitlens wrote"):
        OutputFolder(tmp_path).save_result(_result(), "cka.npz")
    assert (tmp_path / OUT_MARKER).read_text() == '{"my": "settings"}'


def test_folders_of_outputs_are_checked_file_by_file(tmp_path):
    folder = OutputFolder(tmp_path)
    folder.save_chart(_chart(), "figures/fig1")
    check_out(tmp_path, REPRODUCE_OUTPUTS)  # every file under figures/ is vitlens's
    (tmp_path / "figures" / "sub").mkdir()
    (tmp_path / "figures" / "sub" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"figures/sub/notes\.txt"):
        check_out(tmp_path, REPRODUCE_OUTPUTS)
    check_out(tmp_path, REPRODUCE_OUTPUTS, overwrite=True)


def test_names_outside_the_folder_are_refused(tmp_path):
    folder = OutputFolder(tmp_path / "out")
    for bad in ("../escape.npz", "/abs.npz"):
        with pytest.raises(ValueError, match="not a file name inside the output folder"):
            folder.save_result(_result(), bad)
    with pytest.raises(ValueError, match="not a file name inside the output folder"):
        folder.write_text(OUT_MARKER, "{}")
    assert not (tmp_path / "escape.npz").exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# reproduce: interrupted before any output, then rerun into its own folder
# ---------------------------------------------------------------------------------------------


def test_interrupted_reproduce_leaves_no_marker_and_owns_nothing(tmp_path, monkeypatch):
    import vitlens.reproduce as rep

    (tmp_path / "cka.png").write_bytes(b"my own figure, hours of work")
    with pytest.raises(ValueError, match=r"cka\.png"):
        check_out(tmp_path, CKA_OUTPUTS)

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rep, "run_groups", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reproduce(tmp_path, quick=True, progress=False)
    assert not (tmp_path / OUT_MARKER).exists()
    with pytest.raises(ValueError, match=r"cka\.png"):  # still the user's
        check_out(tmp_path, CKA_OUTPUTS)
    assert (tmp_path / "cka.png").read_bytes() == b"my own figure, hours of work"


def test_reproduce_replaces_its_own_outputs_but_not_an_edited_one(tmp_path, monkeypatch):
    import vitlens.reproduce as rep

    monkeypatch.setattr(rep, "run_groups", lambda *a, **k: [])
    path = reproduce(tmp_path, quick=True, progress=False)
    assert sorted(_manifest(tmp_path)) == ["FINDINGS.md", "findings.json"]
    assert reproduce(tmp_path, quick=True, progress=False) == path  # its own: replaced
    path.write_text(path.read_text() + "\nmy notes on the verdicts\n")
    with pytest.raises(ValueError, match=r"FINDINGS\.md"):
        reproduce(tmp_path, quick=True, progress=False)
    assert path.read_text().endswith("my notes on the verdicts\n")


# ---------------------------------------------------------------------------------------------
# save_chart's names
# ---------------------------------------------------------------------------------------------


def test_save_chart_keeps_dots_in_the_name(tmp_path):
    (tmp_path / "cka_lr0.png").write_text("user's figure for lr=0")
    written = save_chart(_chart(), tmp_path / "cka_lr0.01")
    assert [p.name for p in written] == ["cka_lr0.01.png", "cka_lr0.01.svg"]
    assert all(p.is_file() for p in written)
    assert (tmp_path / "cka_lr0.png").read_text() == "user's figure for lr=0"


def test_save_chart_drops_only_a_figure_suffix(tmp_path):
    assert [p.name for p in chart_paths(tmp_path / "cka.png")] == ["cka.png", "cka.svg"]
    assert [p.name for p in chart_paths(tmp_path / "cka.SVG", ("svg",))] == ["cka.svg"]
    assert [p.name for p in chart_paths(tmp_path / "run.v2", ("png",))] == ["run.v2.png"]


def test_save_chart_refuses_a_bad_format_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported figure formats \['pdf'\]"):
        save_chart(_chart(), tmp_path / "fig", formats=("png", "pdf"))
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# permissions
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_files_get_the_umasks_mode(tmp_path, umask_022):
    path = _result().save(tmp_path / "cka.npz")
    assert _mode(path) == 0o644
    png, svg = save_chart(_chart(), tmp_path / "cka")
    assert _mode(png) == _mode(svg) == 0o644
    _write_cka(tmp_path / "out")
    assert {_mode(p) for p in (tmp_path / "out").iterdir()} == {0o644}
    os.umask(0o077)
    assert _mode(_result().save(tmp_path / "private.npz")) == 0o600


def test_replacing_a_file_keeps_its_mode(tmp_path, umask_022):
    path = _result().save(tmp_path / "cka.npz")
    path.chmod(0o640)
    _result().save(path)
    assert _mode(path) == 0o640
    png, _ = save_chart(_chart(), tmp_path / "cka")
    png.chmod(0o664)
    save_chart(_chart(), tmp_path / "cka")
    assert _mode(png) == 0o664
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cka.npz", "cka.png", "cka.svg"]


def test_a_link_or_file_appearing_while_a_chart_renders_is_never_written_through(
        tmp_path, monkeypatch):
    """Checked before rendering and again before each write; files are moved into place, so
    a symlink at the name is never followed (review: a link made during rendering had
    vitlens overwrite a file outside the folder)."""
    import vitlens.figures as figures

    user = tmp_path / "user.txt"
    user.write_text("the user's")
    out = tmp_path / "out"
    out.mkdir()
    real = figures.render_chart

    def render_then_link(*args, **kwargs):
        data = real(*args, **kwargs)
        (out / "cka.png").symlink_to(user)  # appears after the first check
        return data

    monkeypatch.setattr(figures, "render_chart", render_then_link)
    with pytest.raises(ValueError, match="cka.png"):
        OutputFolder(out).save_chart(_chart(), "cka")
    assert user.read_text() == "the user's"
    assert (out / "cka.png").is_symlink()  # left as it was: not vitlens's


def test_a_hard_link_to_a_saved_figure_keeps_its_content(tmp_path):
    """A re-run replaces its own figure by a new file: a hard link the user made to the old
    one still holds the old picture (review: it was truncated in place)."""
    folder = OutputFolder(tmp_path / "o")
    (png, _svg) = folder.save_chart(_chart(), "cka")
    kept = tmp_path / "paper_fig.png"
    os.link(png, kept)
    before = kept.read_bytes()
    OutputFolder(tmp_path / "o").save_chart(_chart(title="other"), "cka")
    assert kept.read_bytes() == before and png.read_bytes() != before
    assert OutputFolder(tmp_path / "o").owns("cka.png")
