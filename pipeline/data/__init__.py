"""The datasets: what to download and its checksums, the download and prepare stages, the prepared
``.npz`` files, and the restricted unpickler that reads the source pickles.

Modules:

- :mod:`download`: The ``download`` stage: fetch each source file from a mirror or its canonical URL, ...
- :mod:`prepare`: The ``prepare`` stage: verified pickles in, ``.npz`` splits out (data/prepared)
- :mod:`prepared`: Reading the prepared datasets (``data/prepared/*.npz``, written by ...
- :mod:`restricted_unpickle`: Unpickle the dataset files while admitting nothing but numpy array reconstruction
- :mod:`sources`: What the suite downloads and the values each file must verify against
"""

__all__ = ["download", "prepare", "prepared", "restricted_unpickle", "sources"]
