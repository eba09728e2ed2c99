// The words the service defines once (lab/domain/vocabulary.py), from the page's embedded config
// (GET /api/config's `vocabulary`): run statuses and which are final, the model's verdicts and parts.

export const vocabulary = JSON.parse(document.getElementById("lab-config").textContent).vocabulary;
export const FINAL = new Set(vocabulary.final_statuses);
export const VERDICT_WORDS = vocabulary.model_verdicts;
export const PART_WORDS = vocabulary.model_parts;
