"""The stages that run by themselves: each a runner, supervised in one place and driven two ways.

A runner (``base.Runner``) has a name, one round of work, a wake-up other runners set when they hand
it something, and a backoff policy for failed rounds. The runners of a worker are one list
(``mailbot.worker.Worker.runners``); ``drivers.single_pass`` drives them once in stage order
(``mailbot run --once``), ``drivers.run_until_stopped`` gives each a supervised thread (``mailbot run``).
"""
