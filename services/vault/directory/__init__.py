"""The directory: organisations (services de police municipale), their agents, habilitations
(R241-12), cameras, docking stations, and which agent wore which camera when."""
