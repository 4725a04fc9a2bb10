// FHIR R4 views of a patient's stream, and FHIR resources read back into record events.
//
// Outbound: every event of a patient's stream that FHIR has a resource for becomes one
// (Observation for weights, labs, pregnancy tests and PHQ-9s; MedicationRequest for
// prescriptions; MedicationDispense for dispenses; MedicationStatement for concomitant
// medications; Consent for the enrollment and the signed acknowledgement of risk), and the
// evaluation of the record now becomes DetectedIssues (every denial reason and alert) and
// Tasks (every due item). A resource's id is "<patient id>.<event id>" (or
// "<patient id>.<reason|alert|due>-<code>"), its meta.versionId the stream version of the
// entry that last changed it (an entered_in_error correction changes the target's status).
//
// Inbound: Observation, MedicationRequest and MedicationStatement resources become events of
// the record format; anything that cannot be mapped is an Error whose field is the FHIPath of
// the element at fault ("Observation.code.coding"). The events then go through the service's
// own validation (the engine's record parser), exactly like the native API's.
//
// Pure functions over values; thread-safe.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/time.h"
#include "fhir/fhir_knowledge.h"
#include "rules/rulebook.h"
#include "store/event_store.h"

namespace isoguard::fhir {

// The resource types of the facade, in the order of the CapabilityStatement.
inline constexpr std::string_view kReadTypes[] = {"Patient",
                                                  "Observation",
                                                  "MedicationRequest",
                                                  "MedicationDispense",
                                                  "MedicationStatement",
                                                  "DetectedIssue",
                                                  "Task",
                                                  "Consent"};
inline constexpr std::string_view kCreateTypes[] = {"Observation", "MedicationRequest",
                                                    "MedicationStatement"};
bool IsReadType(std::string_view type);
bool IsCreateType(std::string_view type);

// Resource ids: the FHIR id alphabet is [A-Za-z0-9.-], 1 to 64 characters.
bool IsFhirId(std::string_view id);
// "<patient>.<rest>": the patient part (everything before the first '.').
std::string_view PatientOfResourceId(std::string_view id);

// One resource with what search needs.
struct Resource {
  std::string type;
  std::string id;
  int64_t version = 1;
  Instant last_updated{};
  std::optional<Instant> date;  // the search date (effective, authored, handed over, ...)
  std::vector<std::pair<std::string, std::string>> codes;  // (system, code) of `code`
  std::string status;
  boost::json::object body;
};

// Every resource of a patient's stream (as Service::ReadTimeline returns it) and of its
// evaluation now (the contract JSON of Service::ReadPatient). `evaluation` may be null (then
// no DetectedIssue or Task is built).
std::vector<Resource> ResourcesOfStream(const FhirKnowledge& k, const Rulebook& rulebook,
                                        const store::Stream& stream,
                                        const boost::json::object* evaluation, Instant now);

// The ATC prefix of an interaction class, empty when it has none.
std::string AtcOfInteractionClass(const Rulebook& rulebook, std::string_view class_code);

// ---- Inbound.

// The patient id a resource's `subject` names ("Patient/p-1"); the error names `where`.
Result<std::string> SubjectPatient(const boost::json::object& resource, std::string_view where);

// One record event (a JSON object of the record format) for a created resource. `now` is the
// time of events that carry none (a MedicationStatement without an effective time). `where`
// prefixes the element paths of errors ("Bundle.entry[3].resource").
Result<boost::json::object> EventFromResource(const FhirKnowledge& k,
                                              const boost::json::object& resource,
                                              std::string_view where, Instant now);

// Whether a medication CodeableConcept (or a MedicationRequest's medicationCodeableConcept) is
// isotretinoin by its RxNorm or ATC coding.
bool IsIsotretinoin(const FhirKnowledge& k, const boost::json::value* concept_value);

// A prescription event for an isotretinoin MedicationRequest (also used for the draft orders
// of CDS Hooks). `id` becomes the prescription's id.
Result<boost::json::object> PrescriptionFromMedicationRequest(const FhirKnowledge& k,
                                                              const boost::json::object& resource,
                                                              std::string_view where,
                                                              std::string id, Instant now);

// ---- Outcomes and Bundles.

// An OperationOutcome with one issue. `code` is an IssueType ("invalid", "required",
// "code-invalid", "not-found", "forbidden", "login", "conflict", "too-costly", "exception",
// "not-supported", "processing", "informational"); `expression` a FHIRPath, or empty.
boost::json::object OperationOutcome(std::string_view severity, std::string_view code,
                                     std::string diagnostics, std::string_view expression = {});
// The IssueType for an error kind.
std::string_view IssueTypeFor(const Error& error);

}  // namespace isoguard::fhir
