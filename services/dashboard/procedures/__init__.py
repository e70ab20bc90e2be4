"""The procedures: open one, attach recordings (legal hold), extract a copy, close it."""
