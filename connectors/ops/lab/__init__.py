"""`waxlake lab`: the article's three guarantees under the same faults, measured side by side.

One module per concern: the workload and its producer (`workload`), the job's processes
(`job`), the fault menu and its seeded schedule (`faults`), one guarantee's run (`runner`), the
exact counts (`counting`), produce-to-visible latency (`latency`), the table and JSON
(`report`), the picture (`plot`) and the command itself (`command`).
"""
