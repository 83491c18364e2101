"""The retrain loop: the policy that decides from a window's saved reports, the DAG tasks that
run the loop (check and decide; open and conclude a training run), and the notifications it
sends through `alerting.notify`."""
