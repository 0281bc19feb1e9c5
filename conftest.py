# Modules that only run inside other programs are not collected for doctests.
collect_ignore_glob = ["src/featureledger/registry/migrations/*"]
