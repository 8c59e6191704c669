# Python imports this at start-up when this folder is on PYTHONPATH: the process gets no network (offline_guard).
import offline_guard

offline_guard.install()
