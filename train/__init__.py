"""toolprm.train: PRM training data and training.

* ``masking``  — Hammer-style function masking (random function / parameter names).
* ``rollout``  — constrained sampling rollouts with every step event, the policy's
  hidden state where the in-loop PRM reads it, and the step log-prob.
* ``labels``   — step labels under BFCL's checker semantics.
* ``data``     — the data pipeline (`toolprm train data`), JSONL + hidden states,
  split by query, from BFCL's live categories only.
* ``prm``      — head training (`toolprm train prm`).
* ``evaluate`` — step / trajectory accuracy, balanced accuracy and AUC per step
  kind beside the majority baseline (`toolprm train eval`).
* ``cli``      — `toolprm train {data,prm,eval,all}`.
"""
