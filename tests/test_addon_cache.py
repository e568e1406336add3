"""The add-on's cache folders (blender_addon/cache.py, pure Python, tested without Blender): a bake
replaces or deletes only a folder marked as a metaphys cache; a user's folder that the object's
Cache Folder points at is left untouched and the add-on shows why (issue 25)."""
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_cache_module():
    # by path: importing the blender_addon package would import bpy
    path = os.path.join(ROOT, "blender_addon", "cache.py")
    spec = importlib.util.spec_from_file_location("metaphys_addon_cache", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cache = _load_cache_module()


def _finished_bake(final_dir, text="new bake"):
    """A staging folder whose worker finished: out/ with a result file."""
    st = cache.make_staging(str(final_dir))
    with open(st.spec_path, "w") as fh:
        fh.write("{}")
    os.makedirs(st.out_dir)
    with open(os.path.join(st.out_dir, "cloth.pc2"), "w") as fh:
        fh.write(text)
    return st


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "sub").mkdir()
    (path / "sub" / "data.csv").write_text("1,2,3")
    return cache.cache_files_hash(str(path))


def _siblings(path):
    return sorted(os.listdir(path.parent))


def test_commit_makes_a_marked_cache_and_replaces_only_marked_ones(tmp_path):
    final = tmp_path / "metaphys_cache" / "Grid"
    assert cache.commit(_finished_bake(final, "first")) == str(final)
    assert cache.is_metaphys_cache(str(final)) and (final / "cloth.pc2").read_text() == "first"
    cache.commit(_finished_bake(final, "second"))
    assert (final / "cloth.pc2").read_text() == "second"
    assert _siblings(final) == ["Grid"]  # no staging or aside folders left


def test_commit_over_a_foreign_folder_leaves_it_untouched_and_raises(tmp_path):
    final = tmp_path / "project"
    before = _user_folder(final)
    st = cache.make_staging(str(tmp_path / "elsewhere"))  # set up before the Cache Folder was changed
    st.final_dir = str(final)
    os.makedirs(st.out_dir)
    with open(st.spec_path, "w") as fh:
        fh.write("{}")
    with pytest.raises(cache.CacheError, match=r"'.*project' already holds files and is not a metaphys cache "
                                               r"\(no \.metaphys_cache file\).*left untouched"):
        cache.commit(st)
    assert cache.cache_files_hash(str(final)) == before


def test_a_bake_into_a_foreign_folder_is_refused_before_it_starts(tmp_path):
    final = tmp_path / "project"
    before = _user_folder(final)
    with pytest.raises(cache.CacheError, match="Set the object's Cache Folder to a new or empty folder"):
        cache.make_staging(str(final))
    assert cache.cache_files_hash(str(final)) == before and _siblings(final) == ["project"]


def test_an_empty_folder_may_become_the_cache(tmp_path):
    final = tmp_path / "empty"
    final.mkdir()
    cache.commit(_finished_bake(final))
    assert cache.is_metaphys_cache(str(final))


def test_a_file_or_a_link_is_never_replaced(tmp_path):
    target = tmp_path / "project"
    before = _user_folder(target)
    link = tmp_path / "Grid"
    os.symlink(target, link)
    (target / cache.MARKER).write_text("even a marked folder behind a link")
    with pytest.raises(cache.CacheError, match="is a symbolic link"):
        cache.make_staging(str(link))
    with pytest.raises(cache.CacheError, match="not a metaphys cache folder"):
        cache.remove_cache(str(link))
    assert os.path.islink(link) and (target / "thesis.tex").exists()
    (target / cache.MARKER).unlink()
    assert cache.cache_files_hash(str(target)) == before
    f = tmp_path / "file"
    f.write_text("a file")
    with pytest.raises(cache.CacheError, match="is a file"):
        cache.make_staging(str(f))
    assert f.read_text() == "a file"


def test_free_deletes_only_marked_folders(tmp_path):
    final = tmp_path / "project"
    before = _user_folder(final)
    with pytest.raises(cache.CacheError, match=r"not a metaphys cache folder \(no \.metaphys_cache file"):
        cache.remove_cache(str(final))
    assert cache.cache_files_hash(str(final)) == before
    ours = tmp_path / "metaphys_cache" / "Grid"
    cache.commit(_finished_bake(ours))
    assert cache.remove_cache(str(ours)) and not ours.exists()


def test_cleanup_leaves_foreign_folders_with_our_temporary_names(tmp_path):
    final = tmp_path / "Grid"
    for name in (".Grid.bake-notmine", ".Grid.old-notmine"):
        _user_folder(tmp_path / name)
    cache.recover(str(final))
    cache.remove_stale_staging(str(final))
    assert (tmp_path / ".Grid.bake-notmine" / "thesis.tex").exists()
    assert (tmp_path / ".Grid.old-notmine" / "thesis.tex").exists() and not final.exists()
    stale = cache.make_staging(str(final))  # a crashed bake's staging folder: ours, removed
    cache.remove_stale_staging(str(final))
    assert not os.path.exists(stale.root)
