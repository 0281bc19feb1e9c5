"""The ``featureledger`` command line."""
