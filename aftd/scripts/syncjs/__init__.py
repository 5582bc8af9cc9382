"""SyncJS scripts: ``<scripts_dir>/<id>.js`` run by an embedded JavaScript engine (QuickJS)
with the SyncJS host API (``Params``, ``GetSecret``, ``HttpCli``, ``VirtualFSByName`` ...)
mapped onto the same job context Python scripts get. See README, "Running SyncJS scripts".

Importing this package loads nothing heavy: the engine lives in :mod:`.engine`, imported by
the worker process that runs a job.
"""
