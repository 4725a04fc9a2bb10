// The fuzz targets of isoguard: each takes one input of arbitrary bytes and must neither
// crash, hang, leak nor trip a sanitizer, whatever the bytes are. They are called by the
// libFuzzer entry points (fuzz/*_fuzzer.cpp, `make fuzz`) and by the test suite, which replays
// the seed corpora and every input that once failed (fuzz/corpus/<target>/,
// fuzz/regressions/<target>/) through the same functions.
//
//   record       a record in the contract's JSON (ParseRecord), and if it parses, evaluated by
//                the engine at a fixed instant; the same bytes as one event and as a patient
//   program      a program's TOML (ParseProgramToml)
//   fhir         a FHIR R4 resource or Bundle in JSON through the facade's inbound mapping
//                (EventFromResource, PrescriptionFromMedicationRequest, SubjectPatient); what it
//                maps is parsed as the service would
//   http         raw bytes on a connection to a real server stack (Beast's parser with the
//                server's limits, the router, the API's strict body decoders, the FHIR and CDS
//                Hooks routes, and the service on a throwaway SQLite store). The first byte picks
//                the bearer token the rest may use: "$TOKEN" in the input becomes it, "$PATIENT" an
//                enrolled patient's id. Any answer is fine except a 500 (an internal error is a
//                bug) or none at all.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace isoguard::fuzz {

// Where programs/ and knowledge/ are (the source tree); set before the first call.
void SetDataDir(std::string dir);

int FuzzRecord(std::string_view input);
int FuzzProgram(std::string_view input);
int FuzzFhir(std::string_view input);
int FuzzHttp(std::string_view input);

// For the tests: the http target's stack is started once and kept; this stops it (so that a
// test binary exits cleanly). Calling FuzzHttp afterwards starts a new one.
void StopHttpTarget();

}  // namespace isoguard::fuzz
