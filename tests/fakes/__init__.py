"""Local fakes of vendor services for the tests, written here (not the vendors' code).

``lepton_api`` (Lepton workspace API) and ``runai_api`` (Run:ai REST API) follow the vendors'
documented paths, methods, bearer auth, status codes and pagination, and the jobs they accept
really run as containers on the Docker sandbox's engine, so states, logs and results are real
(``common`` holds what those two share). Other modules here fake other services.
"""
