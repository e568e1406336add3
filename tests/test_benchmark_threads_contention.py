"""benchmarks/threads_contention.py runs end to end on tiny scenes and writes its table."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_threads_contention_benchmark_quick(tmp_path):
    out = tmp_path / "threads.md"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "threads_contention.py"), "--quick",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = out.read_text()
    for scene in ("smoke 16²",):
        rows = [line for line in table.splitlines() if f"| quiet | {scene} |" in line]
        assert len(rows) == 5, table                      # one thread and four two-thread settings
        assert all("- (" not in line for line in rows), table   # every run finished and was timed
    assert "| quiet | smoke 16² | 1 thread |" in table and "1.00x" in table


def test_a_rerun_replaces_the_table_and_keeps_the_notes(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import threads_contention
    out = tmp_path / "threads.md"
    out.write_text("# old title\n\n| old table |\n\n## Notes (earlier)\n\n- what we learned\n")
    rows = [dict(load="quiet", scene="smoke 16²", config="1 thread", s=0.5, error="")]
    threads_contention.write(str(out), rows, 0.3)
    text = out.read_text()
    assert "| old table |" not in text and "| quiet | smoke 16² | 1 thread | 0.500 | 1.00x |" in text
    assert text.endswith("## Notes (earlier)\n\n- what we learned\n")
