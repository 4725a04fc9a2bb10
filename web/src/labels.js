// Words for the record contract's codes (docs/record-format.md). Wording only: every number and
// threshold the app shows comes from the service.

export const DUE = {
  SCREENING_TEST: 'Screening pregnancy test',
  CONFIRMATION_TEST: 'Confirmation pregnancy test',
  PREGNANCY_TEST: 'Monthly pregnancy test',
  COMPREHENSION: 'Monthly comprehension questions',
  COUNSELING_VISIT: 'Monthly visit and counselling',
  LABS_BASELINE: 'Baseline blood tests (lipids and liver)',
  LABS_FOLLOW_UP: 'Follow-up blood tests (lipids and liver)',
  PHQ9: 'Mood questionnaire (PHQ-9)',
  END_OF_TREATMENT_TEST: 'End-of-treatment pregnancy test',
  POST_TREATMENT_TEST: 'Pregnancy test one month after the last dose',
  CONTRACEPTION_UNTIL: 'Keep using contraception until this day',
  NO_BLOOD_DONATION_UNTIL: 'Do not donate blood until this day',
  RISK_ACKNOWLEDGEMENT: 'Sign the acknowledgement-of-risk form',
};
export function dueLabel(code) {
  return DUE[code] || code.toLowerCase().replaceAll('_', ' ');
}
// Due items that are advice with an end date rather than a task.
export function isUntil(code) {
  return code.endsWith('_UNTIL');
}

export const EVENT_TYPES = {
  weight: 'Weight',
  lab: 'Lab result',
  pregnancy_test: 'Pregnancy test',
  visit: 'Visit',
  contraception: 'Contraception attestation',
  comprehension: 'Comprehension questions',
  phq9: 'PHQ-9 questionnaire',
  medication: 'Other medication',
  adverse_event: 'Side effect',
  missed_dose: 'Missed dose',
  treatment_end: 'End of treatment',
  category_change: 'Category change',
  risk_acknowledgement: 'Acknowledgement-of-risk form',
  assessment: 'Assessment',
  second_prescriber: 'Second prescriber agreement',
  enrollment: 'Enrollment',
  prescription: 'Prescription',
  prescription_cancel: 'Prescription cancelled',
  dispense: 'Dispense',
  authorization: 'Authorization',
  authorization_reversal: 'Authorization reversed',
  entered_in_error: 'Entered in error',
  patient: 'Patient details',
};

export const METHODS = [
  ['tubal_sterilization', 'Tubal sterilization'],
  ['partner_vasectomy', "Partner's vasectomy"],
  ['iud_copper', 'Copper IUD'],
  ['iud_hormonal', 'Hormonal IUD'],
  ['implant', 'Implant'],
  ['injection', 'Injection'],
  ['combined_oral_contraceptive', 'Combined pill'],
  ['progestin_only_pill', 'Progestin-only pill'],
  ['patch', 'Patch'],
  ['vaginal_ring', 'Vaginal ring'],
  ['male_condom', 'Male condom'],
  ['diaphragm', 'Diaphragm'],
  ['cervical_cap', 'Cervical cap'],
  ['vaginal_sponge', 'Vaginal sponge'],
  ['withdrawal', 'Withdrawal'],
  ['fertility_awareness', 'Fertility awareness'],
  ['spermicide_alone', 'Spermicide alone'],
  ['emergency_contraception', 'Emergency contraception'],
  ['abstinence', 'Abstinence'],
];

export const PRODUCTS = [
  ['generic', 'Isotretinoin capsules (generic)'],
  ['absorica', 'Absorica'],
  ['absorica_ld', 'Absorica LD'],
];

export const CATEGORY = {
  can_get_pregnant: 'can get pregnant',
  cannot_get_pregnant: 'cannot get pregnant',
};

// The PHQ-9 (Kroenke, Spitzer and Williams; free to use): over the last two weeks, how often...
export const PHQ9_ITEMS = [
  'Little interest or pleasure in doing things',
  'Feeling down, depressed, or hopeless',
  'Trouble falling or staying asleep, or sleeping too much',
  'Feeling tired or having little energy',
  'Poor appetite or overeating',
  'Feeling bad about yourself, or that you are a failure or have let yourself or your family down',
  'Trouble concentrating on things, such as reading the newspaper or watching television',
  'Moving or speaking so slowly that other people could have noticed, or the opposite: being so fidgety or restless that you have been moving around a lot more than usual',
  'Thoughts that you would be better off dead, or of hurting yourself in some way',
];
export const PHQ9_ANSWERS = [
  ['0', 'Not at all'],
  ['1', 'Several days'],
  ['2', 'More than half the days'],
  ['3', 'Nearly every day'],
];

// Comprehension questions, from the Medication Guide's safety messages.
export const COMPREHENSION = [
  {
    q: 'Can you take isotretinoin if you are pregnant or could become pregnant without contraception?',
    options: [['no', 'No: it causes severe birth defects'], ['yes', 'Yes, if the dose is low']],
    right: 'no',
  },
  {
    q: 'Should you share your capsules with someone else?',
    options: [['yes', 'Yes, if they have acne too'], ['no', 'No, never']],
    right: 'no',
  },
  {
    q: 'You notice mood changes or thoughts of hurting yourself. What do you do?',
    options: [['wait', 'Wait until the next visit'], ['tell', 'Stop and tell your prescriber at once']],
    right: 'tell',
  },
  {
    q: 'May you donate blood while taking isotretinoin?',
    options: [['no', 'No, not during treatment and for a while after'], ['yes', 'Yes']],
    right: 'no',
  },
];

export function summarizeEvent(e) {
  switch (e.type) {
    case 'weight': return `${e.kg} kg`;
    case 'lab': return `${e.test} ${e.value} ${e.unit}${e.uln ? ` (ULN ${e.uln})` : ''}${e.fasting === true ? ', fasting' : e.fasting === false ? ', not fasting' : ''}`;
    case 'pregnancy_test': return `${e.result}, ${e.setting}, ${e.specimen}`;
    case 'visit': return e.counseled ? 'counselled' : 'not counselled';
    case 'contraception': return `${(e.methods || []).join(', ')} since ${e.since}`;
    case 'comprehension': return e.passed ? 'passed' : 'not passed';
    case 'phq9': return `total ${(e.items || []).reduce((a, b) => a + b, 0)} (item 9: ${(e.items || [])[8]})`;
    case 'medication': return `${e.action} ${e.name}`;
    case 'adverse_event': return `${e.term}${e.serious ? ' (serious)' : ''}`;
    case 'missed_dose': return e.date;
    case 'treatment_end': return `last dose ${e.last_dose}`;
    case 'prescription': return `${e.id}: ${e.product} ${(e.doses_mg || []).join(' + ')} mg/day, ${e.days_supply} days`;
    case 'prescription_cancel': return e.prescription;
    case 'dispense': return `${e.prescription}${e.lot ? `, lot ${e.lot}` : ''}`;
    case 'authorization': return `${e.authorization} for ${e.prescription}, until ${e.dispense_by}`;
    case 'authorization_reversal': return e.authorization;
    case 'entered_in_error': return `withdraws ${e.target}`;
    case 'category_change': return CATEGORY[e.category] || e.category;
    case 'assessment': return e.kind;
    case 'enrollment': return e.program || '';
    case 'patient': return `${e.jurisdiction}, ${CATEGORY[e.category] || e.category}`;
    default: return '';
  }
}
