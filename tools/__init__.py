"""Tools for people working on the stack, not parts of it: the dev-stack launcher (`make stack`)
and `tools.testkit`, the harness the tests and the benchmarks share."""
