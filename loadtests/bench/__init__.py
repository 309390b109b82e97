"""greenserve's benchmark against peer WSGI servers (see loadtests/README.md, "Benchmark")."""
