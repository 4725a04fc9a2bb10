// The synthetic cohort: deterministic, valid by the contract, and varied enough to exercise
// every program, category, stage and most decisions, reasons and alerts of the engine.
#include "cli/synth.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "domain/record_parser.h"
#include "rules/evaluate.h"
#include "rules/rulebook_loader.h"

namespace isoguard {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string Cohort(uint64_t patients, uint64_t seed) {
  SynthOptions options;
  options.patients = patients;
  options.seed = seed;
  std::ostringstream out;
  auto status = WriteSynthCohort(options, out);
  EXPECT_TRUE(status.ok()) << (status.ok() ? "" : status.error().ToString());
  return out.str();
}

Instant At(std::string_view text) { return ParseOffsetTime(text).value().instant; }

TEST(SynthTest, SameSeedSameCohort) {
  const std::string a = Cohort(300, 42);
  const std::string b = Cohort(300, 42);
  EXPECT_EQ(a, b);
  EXPECT_EQ(Lines(a).size(), 300u);
}

TEST(SynthTest, OtherSeedOtherCohort) {
  const auto a = Lines(Cohort(200, 1));
  const auto b = Lines(Cohort(200, 2));
  ASSERT_EQ(a.size(), b.size());
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i] ? 1 : 0;
  EXPECT_EQ(same, 0);
}

// Patient i's record depends on (seed, i) only: not on the cohort's size, nor on the order of
// generation, so that a cohort can be generated in parallel.
TEST(SynthTest, RecordDependsOnlyOnSeedAndIndex) {
  const auto small = Lines(Cohort(40, 9));
  const auto large = Lines(Cohort(120, 9));
  for (size_t i = 0; i < small.size(); ++i) EXPECT_EQ(small[i], large[i]) << "patient " << i;

  SynthOptions options;
  options.seed = 9;
  auto cohort = SynthCohort::Create(options);
  ASSERT_TRUE(cohort.ok());
  EXPECT_EQ(cohort->Record(77), large[77]);
  EXPECT_EQ(cohort->Record(3), large[3]);
}

TEST(SynthTest, AsOfMovesTheCohort) {
  SynthOptions options;
  options.as_of = LocalDate::FromYmd(2025, 3, 1);
  auto cohort = SynthCohort::Create(options);
  ASSERT_TRUE(cohort.ok());
  ParseOptions parse;
  for (uint64_t i = 0; i < 200; ++i) {
    auto record = ParseRecord(cohort->Record(i), parse);
    ASSERT_TRUE(record.ok()) << i << ": " << record.error().ToString();
    for (const Event& e : record->events) {
      EXPECT_LT(e.at, At("2025-03-01T12:00:00Z")) << "patient " << i << " event " << e.index;
    }
  }
}

class SynthCohortTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto rulebook = LoadRulebook(ISOGUARD_SOURCE_DIR);
    ASSERT_TRUE(rulebook.ok()) << rulebook.error().ToString();
    rulebook_ = new Rulebook(std::move(rulebook).value());
    const Rulebook* rb = rulebook_;
    parse_ = new ParseOptions();
    parse_->is_known_program = [rb](std::string_view id) { return rb->FindProgram(id) != nullptr; };
    lines_ = new std::vector<std::string>(Lines(Cohort(kPatients, 1)));
  }
  static void TearDownTestSuite() {
    delete rulebook_;
    delete parse_;
    delete lines_;
  }

  static constexpr uint64_t kPatients = 3000;
  static Rulebook* rulebook_;
  static ParseOptions* parse_;
  static std::vector<std::string>* lines_;
};
Rulebook* SynthCohortTest::rulebook_ = nullptr;
ParseOptions* SynthCohortTest::parse_ = nullptr;
std::vector<std::string>* SynthCohortTest::lines_ = nullptr;

TEST_F(SynthCohortTest, EveryRecordIsValid) {
  std::set<std::string> patient_ids;
  for (size_t i = 0; i < lines_->size(); ++i) {
    const std::string& line = (*lines_)[i];
    auto record = ParseRecord(line, *parse_);
    ASSERT_TRUE(record.ok()) << "patient " << i << ": " << record.error().ToString();
    EXPECT_TRUE(patient_ids.insert(record->patient.id).second) << record->patient.id;
    EXPECT_LT(line.size(), parse_->limits.max_bytes);
    EXPECT_LE(record->events.size(), parse_->limits.max_events);
    // Nothing after the cohort's "today".
    for (const Event& e : record->events) {
      EXPECT_LT(e.at, At("2026-11-01T12:00:00Z")) << "patient " << i << " event " << e.index;
    }
  }
}

// Local times carry their zone's offset on their date: -04:00 in a New York summer, -05:00 in
// its winter. Checked where the record names its zone, and for the UK (always London).
TEST_F(SynthCohortTest, TimesCarryTheirZonesOffsets) {
  int checked = 0;
  for (const std::string& line : *lines_) {
    const boost::json::value doc = boost::json::parse(line);
    const auto& patient = doc.at("patient").as_object();
    std::string zone_name;
    if (const auto* tz = patient.if_contains("time_zone")) {
      zone_name = std::string(tz->as_string());
    } else if (patient.at("jurisdiction").as_string() == "UK") {
      zone_name = "Europe/London";
    } else {
      continue;
    }
    auto zone = Zone::Locate(zone_name);
    ASSERT_TRUE(zone.ok()) << zone_name;
    ZoneCursor cursor(*zone);
    for (const auto& event : doc.at("events").as_array()) {
      const auto& e = event.as_object();
      const auto* at = e.if_contains("at");
      if (at == nullptr) at = e.if_contains("collected_at");
      ASSERT_NE(at, nullptr);
      const std::string text(at->as_string());
      if (text.back() == 'Z') continue;  // some lab systems write UTC
      auto parsed = ParseOffsetTime(text);
      ASSERT_TRUE(parsed.ok()) << text;
      EXPECT_EQ(cursor.FormatInstant(parsed->instant), text) << zone_name;
      ++checked;
    }
  }
  EXPECT_GT(checked, 10000);
}

TEST_F(SynthCohortTest, CoversProgramsCategoriesStagesAndDecisions) {
  EvaluateOptions today;
  today.at = At("2026-11-01T12:00:00Z");
  std::map<std::string, int> who, states, decisions, reasons, alerts, due, event_types, products;
  std::map<std::string, int> programs_then, reasons_then;
  int second_courses = 0;
  double events_in_treatment = 0;
  int in_treatment = 0;
  for (const std::string& line : *lines_) {
    auto record = ParseRecord(line, *parse_);
    ASSERT_TRUE(record.ok()) << record.error().ToString();
    const Record& r = *record;
    ++who[std::string(ToString(r.patient.jurisdiction)) + "/" +
          std::string(ToString(r.patient.category))];
    bool ended = false, dispensed_after_end = false;
    std::vector<const Event*> prescriptions;
    for (const Event& e : r.events) {
      ++event_types[std::string(ToString(e.type))];
      if (e.type == EventType::kTreatmentEnd) ended = true;
      if (e.type == EventType::kDispense && ended) dispensed_after_end = true;
      if (e.type == EventType::kPrescription) {
        ++products[std::string(ToString(e.product))];
        prescriptions.push_back(&e);
      }
    }
    second_courses += dispensed_after_end ? 1 : 0;

    auto evaluation = Evaluate(*rulebook_, r, today);
    ASSERT_TRUE(evaluation.ok()) << r.patient.id << ": " << evaluation.error().ToString();
    const Evaluation& ev = *evaluation;
    ++states[std::string(ToString(ev.state))];
    if (ev.state == TreatmentState::kInTreatment) {
      ++in_treatment;
      events_in_treatment += static_cast<double>(r.events.size());
    }
    ++decisions[ev.authorization.authorized ? "authorized" : "denied"];
    for (const Reason& reason : ev.authorization.reasons) ++reasons[std::string(reason.code)];
    for (const Alert& alert : ev.alerts) ++alerts[std::string(alert.code)];
    for (const DueItem& item : ev.due) ++due[std::string(item.code)];

    // The same record as its pharmacy saw it then: a minute after each prescription.
    for (const Event* prescription : prescriptions) {
      EvaluateOptions then;
      then.at = prescription->at + std::chrono::minutes(1);
      auto past = Evaluate(*rulebook_, r, then);
      ASSERT_TRUE(past.ok()) << past.error().ToString();
      ++programs_then[std::string(past->program->id)];
      for (const Reason& reason : past->authorization.reasons)
        ++reasons_then[std::string(reason.code)];
    }
  }

  EXPECT_EQ(who.size(), 6u) << "every jurisdiction with both categories";
  for (const auto& [k, n] : who) EXPECT_GT(n, 50) << k;
  EXPECT_GT(who["US/can_get_pregnant"] + who["US/cannot_get_pregnant"],
            static_cast<int>(kPatients) * 6 / 10);
  for (const char* state : {"not_started", "in_treatment", "ended"}) {
    EXPECT_GT(states[state], static_cast<int>(kPatients) / 20) << state;
  }
  EXPECT_GT(second_courses, 100);
  ASSERT_GT(in_treatment, 0);
  const double mean_events = events_in_treatment / in_treatment;
  EXPECT_GT(mean_events, 30);
  EXPECT_LT(mean_events, 55);

  EXPECT_GT(decisions["authorized"], static_cast<int>(kPatients) / 5);
  EXPECT_GT(decisions["denied"], static_cast<int>(kPatients) / 5);
  for (const char* code :
       {"NO_PRESCRIPTION", "PREGNANCY_TEST_WINDOW_EXPIRED", "VISIT_WINDOW_EXPIRED",
        "PRESCRIPTION_WINDOW_EXPIRED", "PREGNANCY_TEST_MISSING", "PREGNANCY_TEST_SETTING",
        "CONTRACEPTION_NOT_CONFIRMED", "CONTRACEPTION_INSUFFICIENT", "COMPREHENSION_MISSING",
        "COUNSELING_MISSING", "SUPPLY_OVER_LIMIT", "REFILLS_NOT_ALLOWED", "NOT_ENROLLED"}) {
    EXPECT_GT(reasons[code], 0) << code;
  }
  EXPECT_GE(reasons.size(), 15u);
  for (const char* code :
       {"TG_HIGH", "TG_CRITICAL", "CHOLESTEROL_HIGH", "LIVER_ENZYMES_HIGH", "PHQ9_MODERATE",
        "PHQ9_SEVERE", "SUICIDAL_IDEATION", "INTERACTION", "DOSE_OUT_OF_RANGE",
        "BASELINE_LABS_MISSING", "PRODUCT_SWITCH", "SECOND_COURSE_TOO_SOON"}) {
    EXPECT_GT(alerts[code], 0) << code;
  }
  EXPECT_GE(alerts.size(), 15u);
  EXPECT_GE(due.size(), 10u);
  EXPECT_EQ(event_types.size(), static_cast<size_t>(kEventTypeCount)) << "every event type";
  EXPECT_EQ(products.size(), static_cast<size_t>(kProductCount)) << "every product";

  // Dated stories: both generations of the US and UK programs applied to someone.
  for (const char* program :
       {"us-ipledge-2023", "us-ipledge-2026", "eu-ppp-2018", "uk-mhra-2023", "uk-mhra-2026"}) {
    EXPECT_GT(programs_then[program], 20) << program;
  }
  EXPECT_GT(reasons_then["LOCKOUT"], 0);
  EXPECT_GT(reasons_then["SECOND_PRESCRIBER_MISSING"] + reasons_then["CONFIRMATION_TOO_EARLY"], 0);
}

}  // namespace
}  // namespace isoguard
