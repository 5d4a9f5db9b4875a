"""One ``hpo worker`` process and the local pool of them.

- ``loop``: ask, run and tell trials until the study's budget is spent;
- ``trial``: one trial's life (``TrialRun``), from its resolved config to its ending;
- ``pruning``: the bridge from the training loop's epochs to the Optuna trial and its pruner;
- ``checkpoints``: a trial's checkpoints in the study's artifact store;
- ``budget``, ``heartbeat``, ``recovery``: the study's global budget, the running trial's
  heartbeat, and the retry of trials whose worker is gone;
- ``threads``: a worker's CPU threads, chosen once from the machine's cores and its workers;
- ``signals``: SIGINT and SIGTERM as one request to stop (a second one aborts);
- ``model_code``: which custom model modules this machine lets a stored spec import;
- ``pool``: ``--processes``/``--gpus``: several worker processes, supervised;
- ``progress``: what a worker shows (start-up steps, each trial live or as one line) and a
  pool's table of its processes.
"""
