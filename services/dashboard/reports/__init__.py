"""The report to the préfet (R241-17): the maire's and the responsable's annual report, the
préfecture's table over its département."""
