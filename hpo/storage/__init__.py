"""Where studies live: a storage URL -> an Optuna storage, and everything hpo does to it.

- ``urls``: ``--storage``/``$HPO_STORAGE`` -> ``StorageTarget`` -> an Optuna storage;
- ``url_checks``: a malformed URL refused before anything connects or looks up a host;
- ``existing``: a journal file checked to be one, and nothing created by a reading command;
- ``secrets``: a URL's password kept out of every output, log and error;
- ``proxies``: the wrappers that reconnect after a database restart and give pruners a cheap
  view of the study;
- ``writes``: a trial's values, parameters and attributes in a few statements;
- ``optuna_internals``: the only module of hpo that names Optuna's private parts, each
  behind one small function (tests/architecture/test_optuna_boundary.py).

The bottom of hpo's import graph (with ``hpo.errors``): nothing here imports another hpo
package.
"""
