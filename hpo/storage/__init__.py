"""Where studies live: a storage URL -> an Optuna storage, and everything hpo does to it.

- ``urls``: ``--storage``/``$HPO_STORAGE`` -> ``StorageTarget`` -> an Optuna storage;
- ``secrets``: a URL's password kept out of every output, log and error;
- ``proxies``: the wrappers that reconnect after a database restart and give pruners a cheap
  view of the study;
- ``writes``: a trial's values, parameters and attributes in a few statements.

The bottom of hpo's import graph (with ``hpo.errors``): nothing here imports another hpo
package.
"""
