"""The decoding ceiling of the synthetic benchmark (``benchmarks/analyses/decoding_ceiling.py`` runs it): its
worlds' data (:mod:`.world`), probes (:mod:`.probes`) and outputs (:mod:`.report`)."""
