"""Synth-Empathy (arXiv 2407.21669), reproduced: the stages' logic behind the numbered notebooks."""

import sys
import warnings


def _text_bars_in_kernels() -> None:
    """A step's progress bars go to the terminal (lib/terminal.py), never into a notebook cell. tqdm.auto picks its
    bar once, when first imported, and in a kernel with ipywidgets (installed for the notebooks' sliders) it picks
    widget bars, drawn into the cell whatever stdout is. Made here to pick the text bar, before a library asks."""
    if "ipykernel.zmqshell" not in sys.modules or "tqdm.autonotebook" in sys.modules:
        return
    import tqdm.notebook

    widgets, tqdm.notebook.IProgress = tqdm.notebook.IProgress, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "IProgress not found": the choice is ours
            import tqdm.autonotebook  # noqa: F401
    finally:
        tqdm.notebook.IProgress = widgets


_text_bars_in_kernels()
