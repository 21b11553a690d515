"""Scoring and generation jobs: the database row is the truth, Celery (or a thread) carries them.

* `models.Job`: one row per job: kind, payload, owner, state, attempts, lease, progress, log
  tail, result, failure reason.
* `store.JobStore`: every state change as one guarded UPDATE (see its docstring).
* `kinds`: what a job kind runs (a function of a lower layer), on which queue, how long at most.
* `runner.execute`: claim, heartbeat, run, record the outcome; `runner.reap` recovers jobs
  whose worker vanished.
* `celery_app`: the Celery transport (`datarena worker`); `embedded.EmbeddedWorker`: the same
  code on a thread of the server when no broker is configured.
* `queue.JobQueue`: what the server and the CLI use: submit, look, cancel, retry.
"""
