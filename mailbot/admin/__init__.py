"""What admins run beside the pipeline: the commands, their composition root, the review queue's
actions, opening a call, the reviewers' bundle, purging, status and checks."""
