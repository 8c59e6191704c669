"""Synth-Empathy (arXiv 2407.21669), reproduced: the stages' logic behind the numbered notebooks."""

import warnings

# Without ipywidgets, tqdm.auto draws text bars in a kernel: JupyterLab redraws them in place and the runner reads
# them (progress.py). Its warning about the missing widgets asks nothing of the user.
warnings.filterwarnings("ignore", message="IProgress not found")
