"""What every layer above uses and nothing here knows of them: atomic files, params.yaml, devices,
thread counts, worker processes, git, the code-dependency graph, unfinished outputs, and the
base of user errors.

Modules:

- :mod:`code_dependencies`: Which source files a stage's results depend on, derived from the import graph in one place
- :mod:`cpu_threads`: How many CPU threads a stage uses: a fixed count by default; optionally the cores that ...
- :mod:`devices`: ``--device auto|cpu|cuda``: use a GPU when one is present, the CPU otherwise
- :mod:`errors`: The base of every error a user can act on (bad input, a locked run, a failed download): ...
- :mod:`files`: Writing outputs safely: a reader (or a killed run) never sees a half-written file or a ...
- :mod:`git`: The one place vaebench asks git something: a file at a revision, the commit checked ...
- :mod:`params`: Read and check ``params.yaml``, the one place every knob of vaebench lives
- :mod:`stage_dependencies`: Which code each DVC stage depends on, and the tool that keeps dvc.yaml's lists right
- :mod:`processes`: Calls that run side by side, each in its own worker process (the seeds of one ...
- :mod:`unfinished_outputs`: Where a stage writes its output folder until it has finished, so that DVC's run-cache ...
"""

__all__ = ["code_dependencies", "cpu_threads", "devices", "errors", "files", "git", "params", "processes", "stage_dependencies",
           "unfinished_outputs"]
