"""To whom a service's report is addressed, by département code ("94", "2A", "971"): the
representative of the State who authorised its cameras and receives its report, named as a
letter names him (« Monsieur le Préfet du Val-de-Marne »), never « du département 94 ».

Decisions (docs/reporting.md):
- Paris (75): the préfet de police, who authorises the cameras of the Paris police municipale.
- Bouches-du-Rhône (13): the préfet de département, not the préfet de police: the report goes
  to the State's representative in the département, like everywhere else.
- Saint-Pierre-et-Miquelon (975) has a préfet; Saint-Barthélemy (977) and Saint-Martin (978)
  share a préfet délégué; the Polynésie française (987) and the Nouvelle-Calédonie (988) a
  haut-commissaire de la République. Wallis-et-Futuna (986) and the TAAF (984) have no
  communes, hence no police municipale: like any code not listed, they get the generic form.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Addressee:
    """`heading` opens the letter, `salutation` and the closing formula use the title alone,
    `territory` names the place (for the préfecture's table)."""

    heading: str
    salutation: str
    territory: str | None


# Code, name, and the name as it follows « Préfet »: the preposition and article it takes.
DEPARTEMENTS: dict[str, tuple[str, str]] = {
    "01": ("Ain", "de l'Ain"),
    "02": ("Aisne", "de l'Aisne"),
    "03": ("Allier", "de l'Allier"),
    "04": ("Alpes-de-Haute-Provence", "des Alpes-de-Haute-Provence"),
    "05": ("Hautes-Alpes", "des Hautes-Alpes"),
    "06": ("Alpes-Maritimes", "des Alpes-Maritimes"),
    "07": ("Ardèche", "de l'Ardèche"),
    "08": ("Ardennes", "des Ardennes"),
    "09": ("Ariège", "de l'Ariège"),
    "10": ("Aube", "de l'Aube"),
    "11": ("Aude", "de l'Aude"),
    "12": ("Aveyron", "de l'Aveyron"),
    "13": ("Bouches-du-Rhône", "des Bouches-du-Rhône"),
    "14": ("Calvados", "du Calvados"),
    "15": ("Cantal", "du Cantal"),
    "16": ("Charente", "de la Charente"),
    "17": ("Charente-Maritime", "de la Charente-Maritime"),
    "18": ("Cher", "du Cher"),
    "19": ("Corrèze", "de la Corrèze"),
    "2A": ("Corse-du-Sud", "de la Corse-du-Sud"),
    "2B": ("Haute-Corse", "de la Haute-Corse"),
    "21": ("Côte-d'Or", "de la Côte-d'Or"),
    "22": ("Côtes-d'Armor", "des Côtes-d'Armor"),
    "23": ("Creuse", "de la Creuse"),
    "24": ("Dordogne", "de la Dordogne"),
    "25": ("Doubs", "du Doubs"),
    "26": ("Drôme", "de la Drôme"),
    "27": ("Eure", "de l'Eure"),
    "28": ("Eure-et-Loir", "d'Eure-et-Loir"),
    "29": ("Finistère", "du Finistère"),
    "30": ("Gard", "du Gard"),
    "31": ("Haute-Garonne", "de la Haute-Garonne"),
    "32": ("Gers", "du Gers"),
    "33": ("Gironde", "de la Gironde"),
    "34": ("Hérault", "de l'Hérault"),
    "35": ("Ille-et-Vilaine", "d'Ille-et-Vilaine"),
    "36": ("Indre", "de l'Indre"),
    "37": ("Indre-et-Loire", "d'Indre-et-Loire"),
    "38": ("Isère", "de l'Isère"),
    "39": ("Jura", "du Jura"),
    "40": ("Landes", "des Landes"),
    "41": ("Loir-et-Cher", "de Loir-et-Cher"),
    "42": ("Loire", "de la Loire"),
    "43": ("Haute-Loire", "de la Haute-Loire"),
    "44": ("Loire-Atlantique", "de la Loire-Atlantique"),
    "45": ("Loiret", "du Loiret"),
    "46": ("Lot", "du Lot"),
    "47": ("Lot-et-Garonne", "de Lot-et-Garonne"),
    "48": ("Lozère", "de la Lozère"),
    "49": ("Maine-et-Loire", "de Maine-et-Loire"),
    "50": ("Manche", "de la Manche"),
    "51": ("Marne", "de la Marne"),
    "52": ("Haute-Marne", "de la Haute-Marne"),
    "53": ("Mayenne", "de la Mayenne"),
    "54": ("Meurthe-et-Moselle", "de Meurthe-et-Moselle"),
    "55": ("Meuse", "de la Meuse"),
    "56": ("Morbihan", "du Morbihan"),
    "57": ("Moselle", "de la Moselle"),
    "58": ("Nièvre", "de la Nièvre"),
    "59": ("Nord", "du Nord"),
    "60": ("Oise", "de l'Oise"),
    "61": ("Orne", "de l'Orne"),
    "62": ("Pas-de-Calais", "du Pas-de-Calais"),
    "63": ("Puy-de-Dôme", "du Puy-de-Dôme"),
    "64": ("Pyrénées-Atlantiques", "des Pyrénées-Atlantiques"),
    "65": ("Hautes-Pyrénées", "des Hautes-Pyrénées"),
    "66": ("Pyrénées-Orientales", "des Pyrénées-Orientales"),
    "67": ("Bas-Rhin", "du Bas-Rhin"),
    "68": ("Haut-Rhin", "du Haut-Rhin"),
    "69": ("Rhône", "du Rhône"),
    "70": ("Haute-Saône", "de la Haute-Saône"),
    "71": ("Saône-et-Loire", "de Saône-et-Loire"),
    "72": ("Sarthe", "de la Sarthe"),
    "73": ("Savoie", "de la Savoie"),
    "74": ("Haute-Savoie", "de la Haute-Savoie"),
    "75": ("Paris", "de Paris"),
    "76": ("Seine-Maritime", "de la Seine-Maritime"),
    "77": ("Seine-et-Marne", "de Seine-et-Marne"),
    "78": ("Yvelines", "des Yvelines"),
    "79": ("Deux-Sèvres", "des Deux-Sèvres"),
    "80": ("Somme", "de la Somme"),
    "81": ("Tarn", "du Tarn"),
    "82": ("Tarn-et-Garonne", "de Tarn-et-Garonne"),
    "83": ("Var", "du Var"),
    "84": ("Vaucluse", "de Vaucluse"),
    "85": ("Vendée", "de la Vendée"),
    "86": ("Vienne", "de la Vienne"),
    "87": ("Haute-Vienne", "de la Haute-Vienne"),
    "88": ("Vosges", "des Vosges"),
    "89": ("Yonne", "de l'Yonne"),
    "90": ("Territoire de Belfort", "du Territoire de Belfort"),
    "91": ("Essonne", "de l'Essonne"),
    "92": ("Hauts-de-Seine", "des Hauts-de-Seine"),
    "93": ("Seine-Saint-Denis", "de la Seine-Saint-Denis"),
    "94": ("Val-de-Marne", "du Val-de-Marne"),
    "95": ("Val-d'Oise", "du Val-d'Oise"),
    "971": ("Guadeloupe", "de la Guadeloupe"),
    "972": ("Martinique", "de la Martinique"),
    "973": ("Guyane", "de la Guyane"),
    "974": ("La Réunion", "de La Réunion"),
    "976": ("Mayotte", "de Mayotte"),
}

# Collectivités d'outre-mer with communes, hence possibly a police municipale.
COLLECTIVITES: dict[str, Addressee] = {
    "975": Addressee(
        "Monsieur le Préfet de Saint-Pierre-et-Miquelon",
        "Monsieur le Préfet",
        "Saint-Pierre-et-Miquelon",
    ),
    "977": Addressee(
        "Monsieur le Préfet délégué de Saint-Barthélemy et de Saint-Martin",
        "Monsieur le Préfet",
        "Saint-Barthélemy",
    ),
    "978": Addressee(
        "Monsieur le Préfet délégué de Saint-Barthélemy et de Saint-Martin",
        "Monsieur le Préfet",
        "Saint-Martin",
    ),
    "987": Addressee(
        "Monsieur le Haut-Commissaire de la République en Polynésie française",
        "Monsieur le Haut-Commissaire",
        "Polynésie française",
    ),
    "988": Addressee(
        "Monsieur le Haut-Commissaire de la République en Nouvelle-Calédonie",
        "Monsieur le Haut-Commissaire",
        "Nouvelle-Calédonie",
    ),
}

# Whoever the code, a letter the préfecture can read: its title, without a place.
GENERIC = Addressee("Monsieur le Préfet", "Monsieur le Préfet", None)


def addressee(code: str) -> Addressee:
    code = code.strip().upper()
    if code == "75":
        return Addressee("Monsieur le Préfet de police", "Monsieur le Préfet", "Paris")
    if code in COLLECTIVITES:
        return COLLECTIVITES[code]
    if code in DEPARTEMENTS:
        name, after_prefet = DEPARTEMENTS[code]
        return Addressee(f"Monsieur le Préfet {after_prefet}", "Monsieur le Préfet", name)
    return GENERIC


def territory_label(code: str) -> str:
    """« Val-de-Marne (94) », or the code alone when it is not known."""
    name = addressee(code).territory
    return f"{name} ({code})" if name else code
