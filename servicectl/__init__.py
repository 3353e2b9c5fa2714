"""Process control written once: start a service, wait for its health, stop it and its children.

`servicectl.process` starts commands in sessions of their own and stops whole process groups,
`servicectl.health` waits for probes (HTTP, Dagster, Airflow), `servicectl.stack` is `make stack`
and `servicectl.serve` is `make serve`. The tests and the benchmarks start their servers with it.
Only the standard library and httpx (psycopg2 for the stack's databases) are imported.
"""
