"""The French words for what the APIs say in codes: roles (shared/auth.py), audit actions and
outcomes (shared/audit.py). One place, so that a page never shows ``habilitation_granted`` and
a new code cannot ship untranslated (tests/test_dashboard_journal.py checks every member)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

# Role names as the law and the organisation say them.
ROLE_LABELS: Mapping[str, str] = {
    "maire": "Maire",
    "responsable": "Responsable du service",
    "habilite": "Agent habilité",
    "agent": "Agent porteur de caméra",
    "dpo": "Délégué à la protection des données",
    "prefecture": "Préfecture",
    "station": "Station d'accueil",
}

# The five operations of article R241-14 first, in the words of the code de la sécurité
# intérieure (an extraction is its « communication »), then the events a DPO traces.
ACTION_LABELS: Mapping[str, str] = {
    "collecte": "Collecte",
    "consultation": "Consultation",
    "extraction": "Extraction (communication)",
    "modification": "Modification (qualification)",
    "effacement": "Effacement",
    "directory_change": "Modification de l'annuaire",
    "habilitation_granted": "Désignation d'un agent habilité",
    "habilitation_withdrawn": "Retrait d'une habilitation",
    "station_registered": "Enregistrement d'une station d'accueil",
    "station_revoked": "Révocation d'une station d'accueil",
    "access_refused": "Accès refusé",
    "fixity_failure": "Objet scellé endommagé ou manquant",
    "fixity_restored": "Objet scellé de nouveau intact",
    "registry_divergence": "Écart entre le registre et le journal",
    "protection_mismatch": "Protection du stockage non conforme",
    "report_finalised": "Rapport annuel finalisé",
    "derivation_requested": "Demande de copie anonymisée pour formation",
    "derivation_finished": "Fin de la fabrication d'une copie anonymisée",
    "derivation_reviewed": "Vérification d'une copie anonymisée",
    "audit_purge": "Purge du journal",
}

OUTCOME_LABELS: Mapping[str, str] = {
    "success": "Effectuée",
    "refused": "Refusée",
    "failed": "Échouée",
}


def _label(labels: Mapping[str, str]) -> Callable[[str | None], str]:
    def label(code: str | None) -> str:
        # A code the dashboard does not know yet (a newer vault) is shown as it is, not hidden.
        return "—" if not code else labels.get(code, code)

    return label


def role_label(code: str | None) -> str:
    """A role, or several as the vault logs a refusal's roles (``dpo,maire``)."""
    if not code:
        return "—"
    return ", ".join(ROLE_LABELS.get(role, role) for role in code.split(","))


action_label = _label(ACTION_LABELS)
outcome_label = _label(OUTCOME_LABELS)

# Jinja filters: {{ entry.action | action_fr }}.
FILTERS = {"role_fr": role_label, "action_fr": action_label, "outcome_fr": outcome_label}
