"""The public API: ``import autoslim`` is light, the README's "Use it in your own training loop" runs as written, and
so does the dense-task example it links to."""

import re
import runpy
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
DENSE_EXAMPLE = README.parent / "search_spaces" / "examples" / "dense_task.py"


def _example(heading: str = "## Use it in your own training loop") -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_import_is_light_and_names_resolve():
    code = ("import sys, autoslim; light = 'torch' not in sys.modules; "
            "names = [autoslim.convert, autoslim.materialize, autoslim.Supernet, autoslim.train_step, "
            "autoslim.recalibrate, autoslim.greedy_slim, autoslim.greedy_search, autoslim.sort_channels]; "
            "print(light, all(callable(n) for n in names), [n for n in autoslim.__all__ if getattr(autoslim, n) is None])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.split() == ["True", "True", "[]"]


def test_an_unknown_name_is_an_attribute_error():
    import pytest

    import autoslim

    with pytest.raises(AttributeError, match="no attribute 'slim_everything'"):
        autoslim.slim_everything  # noqa: B018


def test_the_readme_example_runs_end_to_end(capsys):
    namespace: dict = {}
    exec(compile(_example(), str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    supernet, steps = namespace["supernet"], namespace["steps"]
    largest = supernet.cost(supernet.largest_config()).macs
    assert steps[0].config == supernet.largest_config() and len(steps) > 1
    assert steps[-1].macs <= 0.85 * largest < steps[-2].macs
    assert all(0 <= s.accuracy <= 1 for s in steps)
    assert "slimmable units" in capsys.readouterr().out


def test_the_dense_example_slims_by_pixel_accuracy(capsys):
    assert "search_spaces/examples/dense_task.py" in README.read_text()  # the README links to it
    namespace = runpy.run_path(str(DENSE_EXAMPLE), run_name="__main__")
    supernet, steps, half = namespace["supernet"], namespace["seg_steps"], namespace["half"]
    assert [u.name for u in supernet.slimmable_units] == ["encoder.0", "encoder.3", "decoder.1"]  # the hidden convs
    assert steps[-1].macs <= half < steps[-2].macs and steps[0].config == supernet.largest_config()
    assert all(0 <= s.accuracy <= 1 for s in steps)
    assert "pixel accuracy" in capsys.readouterr().out
