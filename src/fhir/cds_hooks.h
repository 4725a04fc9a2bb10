// CDS Hooks 2.0 services (cds-hooks.hl7.org/2.0): what isoguard tells the prescriber inside
// the EHR's own screens.
//
// - `order-select` and `order-sign` judge the draft isotretinoin MedicationRequests of the
//   request (order-select: the selected ones) as the patient's next prescription: the engine
//   evaluates isoguard's record of the patient plus the prefetch's latest weight and active
//   medications plus the draft, now. Every unmet REMS requirement is a critical card (with the
//   engine's reason code and message and override reasons), every alert a card of its
//   severity (dose out of range, interactions, labs, mood, ...); a dose out of range carries a
//   suggestion that replaces the draft's dosage with the dose planner's.
// - `patient-view` shows what is due and what is overdue.
// Every card links to the patient's page of the web app.
//
// Prefetch templates are declared in discovery; a prefetch key the request lacks (or sends as
// null) is fetched from the request's fhirServer with its fhirAuthorization, within a deadline.
//
// This class knows no HTTP and no service: the caller gives it isoguard's record of the patient.
// Thread-safe: Answer only reads its members.
#pragma once

#include <boost/json/object.hpp>
#include <optional>
#include <string>

#include "core/result.h"
#include "core/time.h"
#include "domain/record_parser.h"
#include "fhir/fhir_api.h"
#include "fhir/fhir_knowledge.h"
#include "rules/rulebook.h"

namespace isoguard::fhir {

// At most this many feedback items in one feedback call, draft orders in one request.
inline constexpr size_t kMaxCdsFeedbackItems = 100;
inline constexpr size_t kMaxDraftOrders = 100;
// A card's summary: fewer than 140 characters (CDS Hooks 2.0, Card attributes).
inline constexpr size_t kMaxSummaryChars = 139;

struct CdsRequest {
  std::string service_id;
  boost::json::object body;
};

class CdsHooks {
 public:
  CdsHooks(const FhirKnowledge& knowledge, const Rulebook& rulebook, ParseOptions parse,
           FhirFetcher fetch, std::chrono::milliseconds fetch_timeout);

  // The discovery document (GET /cds-services).
  boost::json::object Discovery() const;
  bool IsService(std::string_view id) const;

  // The patient id of a request (context.patientId), checking the request's shape first:
  // kBadInput naming the element at fault, kNotFound for an unknown service.
  Result<std::string> CheckRequest(std::string_view service_id,
                                   const boost::json::object& request) const;

  // The CDS Hooks response ({"cards": [...]}) for a checked request. `record_json` is
  // isoguard's record of the patient (the contract format), or nullopt when the caller may not
  // see one (unknown to isoguard, or another clinic's patient). `patient_page` is the absolute
  // URL of the patient's page.
  Result<boost::json::object> Answer(std::string_view service_id,
                                     const boost::json::object& request,
                                     const std::optional<std::string>& record_json, Instant now,
                                     const std::string& patient_page) const;

  // Checks a feedback body and returns one audit line per item.
  Result<std::vector<std::string>> Feedback(std::string_view service_id,
                                            const boost::json::object& body) const;

  // A summary cut to kMaxSummaryChars characters (UTF-8), with "…" when cut.
  static std::string Summary(std::string_view text);

 private:
  struct Prefetched;
  Prefetched Prefetch(const boost::json::object& request, std::string_view patient_id) const;
  std::string TemplateFor(std::string_view key) const;

  const FhirKnowledge& k_;
  const Rulebook& rulebook_;
  ParseOptions parse_;
  FhirFetcher fetch_;
  std::chrono::milliseconds fetch_timeout_;
};

}  // namespace isoguard::fhir
