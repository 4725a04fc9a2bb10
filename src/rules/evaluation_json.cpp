// The evaluate contract's JSON output (docs/record-format.md, "isoguard evaluate").
#include "core/json_writer.h"
#include "core/text.h"
#include "rules/evaluate.h"

namespace isoguard {
namespace {

void WriteTest(JsonWriter& w, ZoneCursor& cursor, const Event& test) {
  w.BeginObject();
  w.Key("collected_at").String(cursor.FormatInstant(test.at));
  w.Key("event").Integer(test.index);
  if (!test.id.empty()) w.Key("id").String(test.id);
  w.Key("setting").String(ToString(test.setting));
  w.EndObject();
}

}  // namespace

std::string EvaluationToJson(const Evaluation& ev, const Record& record, bool include_patient_id) {
  std::string out;
  out.reserve(2048);
  JsonWriter w(out);
  ZoneCursor cursor(ev.zone);
  w.BeginObject();
  if (include_patient_id) w.Key("patient").String(record.patient.id);
  w.Key("program").String(ev.program->id);

  const Authorization& a = ev.authorization;
  w.Key("authorization").BeginObject();
  if (a.prescription) w.Key("prescription").String(*a.prescription);
  w.Key("decision").String(a.authorized ? "authorized" : "denied");
  w.Key("dispense_by");
  if (a.dispense_by) {
    w.String(cursor.FormatInstant(*a.dispense_by));
  } else {
    w.Null();
  }
  w.Key("reasons").BeginArray();
  for (const Reason& r : a.reasons) {
    w.BeginObject().Key("code").String(r.code).Key("message").String(r.message).EndObject();
  }
  w.EndArray();
  if (a.pregnancy_test != nullptr) {
    w.Key("pregnancy_test");
    WriteTest(w, cursor, *a.pregnancy_test);
  }
  w.EndObject();

  w.Key("alerts").BeginArray();
  for (const Alert& al : ev.alerts) {
    w.BeginObject();
    w.Key("code").String(al.code);
    w.Key("severity").String(ToString(al.severity));
    w.Key("message").String(al.message);
    if (!al.interaction_class.empty()) w.Key("class").String(al.interaction_class);
    w.EndObject();
  }
  w.EndArray();

  w.Key("due").BeginArray();
  for (const DueItem& d : ev.due) {
    w.BeginObject();
    w.Key("code").String(d.code);
    w.Key("due_by").String(d.due_by.ToString());
    if (d.not_before) w.Key("not_before").String(d.not_before->ToString());
    w.EndObject();
  }
  w.EndArray();

  const DoseSummary& dose = ev.dose;
  w.Key("dose").BeginObject();
  w.Key("daily_mg");
  dose.daily_mg ? w.Number(*dose.daily_mg) : w.Null();
  w.Key("mg_per_kg_day");
  dose.mg_per_kg_day ? w.Number(RoundHalfUp(*dose.mg_per_kg_day, 2)) : w.Null();
  w.Key("cumulative_mg").Number(dose.cumulative_mg);
  w.Key("cumulative_mg_per_kg").Number(RoundHalfUp(dose.cumulative_mg_per_kg, 2));
  w.Key("target_mg_per_kg")
      .BeginArray()
      .Number(dose.target_mg_per_kg[0])
      .Number(dose.target_mg_per_kg[1])
      .EndArray();
  w.Key("projected_target_date");
  dose.projected_target_date ? w.String(dose.projected_target_date->ToString()) : w.Null();
  w.EndObject();

  w.Key("treatment").BeginObject();
  w.Key("state").String(ToString(ev.state));
  w.Key("category").String(ToString(ev.category));
  w.Key("time_zone").String(ev.zone.name());
  w.Key("course_dispenses").BeginArray();
  for (const CourseDispense& d : ev.course_dispenses) {
    w.BeginObject();
    w.Key("prescription").String(d.prescription);
    w.Key("date").String(d.date.ToString());
    if (d.qualifying_test != nullptr) {
      w.Key("pregnancy_test");
      WriteTest(w, cursor, *d.qualifying_test);
    }
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();

  w.EndObject();
  return out;
}

}  // namespace isoguard
