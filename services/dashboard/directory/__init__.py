"""The annuaire: the organisation's agents and their habilitations (designated and withdrawn
by the responsable, R241-12), its cameras and its docking stations."""
