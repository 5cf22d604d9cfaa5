"""Prompt text for the vision-LLM critique, per language.

The reply must always be the same JSON object with English keys, whatever the language or a
caller's `custom_prompt`, so the service can validate it. Hence two parts: `instructions` (what
to judge; a custom prompt replaces it) and `output_contract` (the JSON format and the language
of its string values; always sent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

LANGUAGE_NAMES = {
    "ca": "Catalan",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
    "ja": "Japanese",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "zh": "Chinese",
}


@dataclass(frozen=True)
class PromptText:
    instructions: str
    output_contract: str
    metrics_intro: str
    repair: str

    def metrics_block(self, metrics: dict[str, Any]) -> str:
        return f"{self.metrics_intro}\n{json.dumps(metrics, ensure_ascii=False)}"

    def repair_request(self, problem: str) -> str:
        return self.repair.format(problem=problem)


_EN_INSTRUCTIONS = (
    "You are a professional photo editor culling photos of an event for the client's gallery. "
    "Critique the attached photo: sharpness and focus, exposure and colour, composition, the "
    "poses and expressions of the people, and the background. Be specific and honest, and base "
    "every statement on what is visible in the photo."
)

_EN_CONTRACT = """Reply with one JSON object and nothing else (no markdown, no code fences). \
It must have exactly these keys:
{{
  "overall_score": number from 1.0 to 10.0 (1 = unusable, 10 = outstanding),
  "discard_reason": string, or null when the photo is worth keeping,
  "best_in_group": boolean, true if this would be the pick among similar shots of the moment,
  "composition": string, one or two sentences,
  "pose_quality": string about the people's posture and expressions, or null without people,
  "background_quality": string, one or two sentences,
  "highlights": array of at most 5 short strings (strengths),
  "issues": array of at most 5 short strings (problems),
  "summary": string, two or three sentences
}}
Write every string value in {language}. Keep the keys exactly as above, in English."""

_EN_METRICS = (
    "Measurements of this photo from automatic analysers, as evidence to ground your critique "
    "(trust what you see where they disagree). Laplacian variance: higher is sharper; BRISQUE: "
    "lower is better (about 0-100); NIMA scores: 1-10, higher is better; emotion: faces found "
    "and their expressions."
)

_EN_REPAIR = (
    "Your previous reply could not be used: {problem}. Reply again with only the JSON object in "
    "the required format, with these problems fixed."
)

_ES_INSTRUCTIONS = (
    "Eres un editor fotográfico profesional que selecciona las fotos de un evento para la "
    "galería del cliente. Critica la foto adjunta: nitidez y enfoque, exposición y color, "
    "composición, las poses y expresiones de las personas y el fondo. Sé concreto y sincero, y "
    "basa cada afirmación en lo que se ve en la foto."
)

_ES_CONTRACT = """Responde con un único objeto JSON y nada más (sin markdown ni bloques de \
código). Debe tener exactamente estas claves:
{{
  "overall_score": número de 1.0 a 10.0 (1 = inservible, 10 = excepcional),
  "discard_reason": texto, o null si vale la pena conservar la foto,
  "best_in_group": booleano, true si sería la elegida entre tomas parecidas del momento,
  "composition": texto, una o dos frases,
  "pose_quality": texto sobre la postura y las expresiones de las personas, o null si no hay,
  "background_quality": texto, una o dos frases,
  "highlights": lista de como máximo 5 textos breves (puntos fuertes),
  "issues": lista de como máximo 5 textos breves (problemas),
  "summary": texto, dos o tres frases
}}
Escribe todos los textos en {language}. Mantén las claves exactamente como arriba, en inglés."""

_ES_METRICS = (
    "Mediciones de esta foto hechas por analizadores automáticos, como datos en los que apoyar "
    "la crítica (si no coinciden con lo que ves, confía en lo que ves). Varianza laplaciana: más "
    "alta, más nítida; BRISQUE: más bajo es mejor (0-100 aprox.); puntuaciones NIMA: 1-10, más "
    "alto es mejor; emotion: caras encontradas y sus expresiones."
)

_ES_REPAIR = (
    "Tu respuesta anterior no se pudo usar: {problem}. Responde de nuevo solo con el objeto JSON "
    "en el formato pedido, corrigiendo esos problemas."
)


def prompt_text(language: str) -> PromptText:
    """Spanish gets a Spanish prompt; every other language the English one naming it."""
    code = language.strip().lower()
    primary = code.split("-")[0]
    if primary == "es":
        return PromptText(
            _ES_INSTRUCTIONS,
            _ES_CONTRACT.format(language="español"),
            _ES_METRICS,
            _ES_REPAIR,
        )
    name = LANGUAGE_NAMES.get(primary, f"the language with code '{code}'")
    return PromptText(_EN_INSTRUCTIONS, _EN_CONTRACT.format(language=name), _EN_METRICS, _EN_REPAIR)
