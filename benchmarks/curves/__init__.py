"""A recorded-curves table of hpo's own workload (digits CNN space, see README.md) and the
code that records it, loads it and checks that it makes a benchmark."""
