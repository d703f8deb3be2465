"""A small biomedical retrieval test set: ~300 short passages and questions with known answers.

Written for the retrieval tests and ``ortgen rag bench``; the question kinds are the cases
where dense and lexical retrieval differ:

    kind        question                                       answer passage                 hard for
    synonym     lay words ("heart attack")                     medical terms only ("myocardial  BM25: no shared word, and a
                                                               infarction"), no shared word      decoy passage shares the lay words
    identifier  a gene symbol ("KCNH2")                        one of ~40 gene passages         dense: symbols are a few word pieces
    dose        a drug and a dose ("aspirin 325 mg")           one of several doses per drug    dense: numbers barely move a vector
    keyword     ordinary wording, partly other word forms      shares words with the question   neither, in principle

Every synonym answer shares no content word with its question (``tests/rag`` checks it with the
BM25 analyzer), and every synonym question has a decoy that does. Each question has exactly one
relevant document; passages are short, so a document is one passage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# (question in lay words, answer in medical words, decoy sharing the question's words)
_SYNONYM = [
    ("What should be done for someone having a heart attack?",
     "Myocardial infarction warrants immediate reperfusion, ideally percutaneous coronary intervention within ninety "
     "minutes of first medical contact.",
     "Panic attack symptoms such as a racing heart usually settle within twenty minutes and nothing should be done."),
    ("Which lifestyle changes lower high blood pressure?",
     "Hypertension responds to reduced sodium intake, weight loss, regular aerobic exercise and limiting alcohol "
     "consumption.",
     "Blood donors need a haemoglobin level high enough before each donation, and pressure on the puncture site "
     "lowers bruising; lifestyle changes are not required."),
    ("How are kidney stones broken up?",
     "Nephrolithiasis larger than five millimetres is often treated with extracorporeal shock wave lithotripsy, which "
     "fragments calculi into passable pieces.",
     "Chronic kidney disease is staged by filtration rate, and gallbladder stones are a separate problem that is not "
     "broken up."),
    ("What are warning signs of low blood sugar?",
     "Hypoglycaemia produces tremor, sweating, palpitations and confusion once plasma glucose falls below about "
     "3.9 mmol/L.",
     "Warning signs of low blood counts after chemotherapy include frequent infections and easy bruising, and sugar "
     "intake is unaffected."),
    ("How do you stop a nosebleed?",
     "Epistaxis usually settles with firm compression of the soft nasal cartilage for ten minutes while leaning "
     "forward.",
     "Nosebleed frequency was recorded as a secondary outcome in the anticoagulant trial, and patients could stop the "
     "drug at any time."),
    ("Is there a treatment for hair loss?",
     "Alopecia areata often regrows spontaneously, and intralesional corticosteroid injections or oral JAK inhibitors "
     "can hasten regrowth.",
     "Weight loss after bariatric surgery is sometimes accompanied by temporary hair thinning; the only treatment "
     "there is reassurance."),
    ("What relieves itching of the skin?",
     "Pruritus may be eased with emollients, cool compresses and oral antihistamines; persistent cases warrant a "
     "search for cholestasis or renal failure.",
     "Skin biopsies were taken to grade itching scores in the atopic dermatitis study, and nothing relieves the "
     "sampling pain."),
    ("Why do people get chest pain when climbing stairs?",
     "Angina pectoris on exertion reflects myocardial oxygen demand exceeding supply through narrowed coronary "
     "arteries.",
     "Chest radiographs were obtained in people with pain after falls on stairs or while climbing ladders."),
    ("What causes shortness of breath in older adults?",
     "Dyspnoea in the elderly most often stems from cardiac failure, chronic obstructive pulmonary disease or "
     "anaemia.",
     "Breath tests for Helicobacter pylori are reliable in older adults, and the causes of false negatives include "
     "recent antibiotics; shortness of the test is an advantage."),
    ("Why might a person suddenly faint?",
     "Syncope is a transient loss of consciousness from global cerebral hypoperfusion, most commonly vasovagal, "
     "orthostatic or arrhythmic in origin.",
     "A faint band on a pregnancy test may appear suddenly when a person tests very early."),
    ("How can parents help a child who wets the bed at night?",
     "Nocturnal enuresis beyond age five responds to enuresis alarms and desmopressin, and most cases resolve "
     "spontaneously with time.",
     "Parents can help a child keep a regular bed time, because screen use at night delays sleep onset."),
    ("What can I take for heartburn after meals?",
     "Gastro-oesophageal reflux symptoms improve with proton pump inhibitors such as omeprazole, alginates, and "
     "avoiding late eating.",
     "Heartburn was reported by few participants, and meals were standardised before pharmacokinetic sampling; "
     "participants could take water."),
    ("What is the vaccine schedule for whooping cough?",
     "Pertussis immunisation uses acellular antigens given at two, four and six months, with boosters in childhood "
     "and during each pregnancy.",
     "A dry cough is a common adverse effect of ACE inhibitors, and the vaccine schedule does not need changing."),
    ("How long is a child with chickenpox contagious?",
     "Varicella is transmissible from two days before the rash appears until all lesions have crusted over.",
     "Parents often ask how long a child with a cold is contagious; chickenpox parties are discouraged."),
    ("Why is German measles dangerous in pregnancy?",
     "Rubella acquired in the first trimester can cause congenital cataracts, deafness and cardiac defects in the "
     "fetus.",
     "Measles outbreaks in German schools prompted mandatory vaccination; pregnancy is a contraindication to the live "
     "vaccine, which is not dangerous otherwise."),
    ("How is lockjaw prevented after a dirty wound?",
     "Tetanus is averted by toxoid boosters and, for contaminated injuries in unvaccinated patients, human "
     "immunoglobulin.",
     "A dirty wound needs thorough irrigation, and infection is best prevented by early debridement."),
    ("Is pink eye contagious?",
     "Viral conjunctivitis spreads readily by hand contact, so affected patients should avoid sharing towels.",
     "Eye drops containing a pink dye stain the cornea; the staining is not contagious."),
    ("What causes bad breath?",
     "Halitosis mostly originates from volatile sulphur compounds produced by anaerobic bacteria on the tongue "
     "dorsum.",
     "Bad sleep causes daytime fatigue, and breath holding spells in toddlers are benign."),
    ("What helps tennis elbow heal?",
     "Lateral epicondylitis generally improves within a year with load management, eccentric exercises and a forearm "
     "brace.",
     "Elbow fractures in tennis players heal within six weeks of immobilisation, which helps."),
    ("Does a slipped disc in the back need an operation?",
     "Lumbar herniated nucleus pulposus usually settles with conservative care; surgery is reserved for cauda equina "
     "syndrome or progressive weakness.",
     "Patients with back pain do not need bed rest, and an operation is rarely required after a slipped ladder."),
    ("How can I keep my bones from becoming brittle?",
     "Osteoporosis risk falls with adequate calcium and vitamin D, weight-bearing exercise and, when indicated, "
     "bisphosphonates.",
     "Brittle nails can reflect hypothyroidism, and the small bones of the hand may keep aching."),
    ("What are the dangers of a blood clot in the leg?",
     "Deep vein thrombosis of the calf or thigh can embolise to the lungs, and anticoagulation for three months is "
     "standard.",
     "Leg cramps and blood in the urine are common complaints; the dangers of clot dissolving drugs include "
     "bleeding."),
    ("Why do my ears keep ringing?",
     "Tinnitus commonly accompanies noise-induced or age-related sensorineural hearing loss.",
     "Ears should keep dry after grommet insertion, and a ringing telephone can test a child."),
    ("What does it mean to see two of everything?",
     "Diplopia that resolves when one eye is covered is binocular and suggests cranial nerve palsy or myasthenia "
     "gravis.",
     "Everything patients see in the first two weeks after cataract surgery may look blue, which does not mean "
     "failure."),
    ("Why is it hard to swallow food?",
     "Dysphagia for solids that progresses over weeks raises concern for oesophageal carcinoma and needs endoscopy.",
     "Hard food should be cut into small pieces for toddlers, who may also swallow coins."),
    ("How to treat sweating too much?",
     "Primary hyperhidrosis is managed with aluminium chloride antiperspirants, iontophoresis or botulinum toxin "
     "injections.",
     "Night sweating is much too common in lymphoma to ignore; treat the underlying cause."),
    ("Who should get the shingles jab?",
     "Recombinant herpes zoster immunisation is advised for adults aged fifty and over, including those with prior "
     "episodes.",
     "Who should get the influenza jab each autumn? Everyone over six months of age, with few exceptions."),
    ("What clears up cold sores on the lips?",
     "Herpes labialis heals within ten days, and topical aciclovir started at the prodrome shortens episodes "
     "slightly.",
     "Cold weather dries the lips, and sores on the tongue usually clear up within a week."),
    ("Why are my ankles swollen?",
     "Peripheral oedema arises from venous insufficiency, cardiac failure, hypoalbuminaemia or calcium channel "
     "blockers such as amlodipine.",
     "Swollen lymph nodes and sprained ankles are frequent reasons for urgent care visits."),
    ("Is walking while asleep harmful?",
     "Somnambulism is a non-REM parasomnia of childhood; securing windows and doors prevents injury during "
     "episodes.",
     "Walking after meals lowers glucose, and asleep patients must not be harmed by bed rails."),
    ("Why can't children see the board at school?",
     "Myopia is blurred distance vision that often begins between eight and twelve years and is corrected with "
     "concave lenses.",
     "Children at school should see a dentist twice a year, says the health board."),
    ("What happens with blood poisoning?",
     "Sepsis is life-threatening organ dysfunction caused by a dysregulated host response to infection.",
     "Lead poisoning raises blood lead levels, and what happens next is chelation therapy."),
]

# (gene symbol, passage); the questions name only the symbol
_GENES = [
    ("KCNQ1", "Loss-of-function variants in KCNQ1 cause long QT syndrome type 1, in which syncope is typically "
              "triggered by exercise or swimming."),
    ("KCNH2", "Variants in KCNH2 underlie long QT syndrome type 2, where arrhythmias are often provoked by sudden "
              "loud noises such as an alarm clock."),
    ("SCN5A", "SCN5A variants are found in Brugada syndrome, with coved ST elevation in the right precordial leads "
              "and a risk of ventricular fibrillation at rest."),
    ("MYH7", "Pathogenic MYH7 variants cause hypertrophic cardiomyopathy with early onset and marked septal "
             "thickening."),
    ("MYBPC3", "Truncating variants in MYBPC3 are the most frequent cause of hypertrophic cardiomyopathy presenting "
               "in middle age."),
    ("LMNA", "LMNA variants cause dilated cardiomyopathy with conduction disease, and implantable defibrillators are "
             "considered early."),
    ("BRCA1", "Carriers of BRCA1 variants face a high lifetime risk of breast and ovarian cancer, and their breast "
              "tumours are often triple-negative."),
    ("BRCA2", "BRCA2 variants raise the risk of male breast cancer, prostate cancer and pancreatic cancer as well as "
              "female breast cancer."),
    ("MLH1", "Germline MLH1 variants cause Lynch syndrome, with colorectal tumours showing microsatellite "
             "instability."),
    ("APC", "Germline APC variants cause familial adenomatous polyposis, with hundreds of colonic polyps by early "
            "adulthood."),
    ("TP53", "Germline TP53 variants cause Li-Fraumeni syndrome, with sarcomas, adrenocortical carcinoma and brain "
             "tumours in childhood."),
    ("RB1", "Biallelic loss of RB1 causes retinoblastoma, often detected as a white pupillary reflex in infants."),
    ("VHL", "VHL variants cause von Hippel-Lindau disease with haemangioblastomas and clear cell renal carcinoma."),
    ("NF1", "NF1 variants cause neurofibromatosis type 1 with cafe-au-lait macules and cutaneous neurofibromas."),
    ("CFTR", "Biallelic CFTR variants cause cystic fibrosis, with thick airway mucus and pancreatic insufficiency."),
    ("HBB", "A single substitution in HBB produces haemoglobin S, the cause of sickle cell disease."),
    ("F8", "Variants in F8 cause haemophilia A, with deficient factor VIII activity and joint bleeding."),
    ("F9", "F9 variants cause haemophilia B, a deficiency of factor IX that is rarer than haemophilia A."),
    ("HFE", "Homozygous C282Y variants of HFE cause hereditary haemochromatosis with iron overload of the liver."),
    ("FBN1", "FBN1 variants cause Marfan syndrome with aortic root dilatation and lens dislocation."),
    ("COL1A1", "COL1A1 variants cause osteogenesis imperfecta with fractures after minimal trauma and blue sclerae."),
    ("DMD", "Deletions in DMD cause Duchenne muscular dystrophy, with calf pseudohypertrophy and loss of walking by "
            "age twelve."),
    ("SMN1", "Homozygous deletion of SMN1 causes spinal muscular atrophy, now treated with nusinersen or gene "
             "therapy."),
    ("HTT", "An expanded CAG repeat in HTT causes Huntington disease with chorea and cognitive decline."),
    ("FMR1", "A CGG repeat expansion in FMR1 causes fragile X syndrome, the commonest inherited intellectual "
             "disability."),
    ("MECP2", "De novo MECP2 variants cause Rett syndrome, with regression and hand wringing in girls."),
    ("PAH", "PAH variants cause phenylketonuria, detected by newborn screening and managed by diet."),
    ("GBA", "GBA variants cause Gaucher disease with splenomegaly and bone crises, and raise Parkinson disease "
            "risk."),
    ("HEXA", "HEXA variants cause Tay-Sachs disease with a cherry-red spot on the macula."),
    ("LDLR", "LDLR variants cause familial hypercholesterolaemia with tendon xanthomas and premature coronary "
             "disease."),
    ("PCSK9", "Gain-of-function PCSK9 variants raise LDL cholesterol, and antibodies against the protein lower it."),
    ("APOE", "The APOE e4 allele is the strongest common genetic risk factor for late-onset Alzheimer disease."),
    ("PKD1", "PKD1 variants cause autosomal dominant polycystic kidney disease with enlarged cystic kidneys."),
    ("G6PD", "G6PD deficiency causes haemolysis after fava beans, primaquine or infection."),
    ("JAK2", "The JAK2 V617F variant drives polycythaemia vera and many cases of essential thrombocythaemia."),
    ("EGFR", "EGFR L858R and exon 19 deletions predict response of lung adenocarcinoma to osimertinib."),
    ("KRAS", "KRAS G12C variants in lung cancer are targeted by sotorasib and adagrasib."),
    ("BRAF", "BRAF V600E variants in melanoma respond to combined BRAF and MEK inhibition."),
    ("ALK", "ALK fusions in lung adenocarcinoma respond to crizotinib, alectinib and lorlatinib."),
    ("ERBB2", "ERBB2 amplification in breast cancer predicts benefit from trastuzumab."),
]
# Gene families: near-identical passages that differ in the symbol and the disorder, as paralogs do in
# the literature; only the symbol tells them apart.
_FAMILIES = [
    ("KCNQ4", "a cochlear potassium channel", "progressive high-frequency hearing loss"),
    ("KCNQ5", "a neuronal potassium channel", "intellectual disability with epilepsy"),
    ("KCNJ2", "an inward rectifier potassium channel", "Andersen-Tawil syndrome with periodic paralysis"),
    ("SCN4A", "a skeletal muscle sodium channel", "hyperkalaemic periodic paralysis and paramyotonia"),
    ("SCN9A", "a peripheral nerve sodium channel", "congenital insensitivity to pain or erythromelalgia"),
    ("COL2A1", "type II collagen", "Stickler syndrome with myopia and cleft palate"),
    ("COL3A1", "type III collagen", "vascular Ehlers-Danlos syndrome with arterial rupture"),
    ("COL4A5", "type IV collagen", "X-linked Alport syndrome with haematuria and deafness"),
    ("COL5A1", "type V collagen", "classical Ehlers-Danlos syndrome with atrophic scars"),
    ("COL7A1", "type VII collagen", "dystrophic epidermolysis bullosa with blistering"),
]
_GENES += [(gene, f"Pathogenic variants in {gene}, which encodes {protein}, cause {disorder}.")
           for gene, protein, disorder in _FAMILIES]
# Same-disease clusters, as in the literature: several passages on one disease, each about another gene;
# (gene, passage, question): the question names the gene and asks for a detail of its passage.
_CLUSTERS = [
    ("SCN1A", "In children with developmental and epileptic encephalopathy, SCN1A variants were associated with "
              "seizure onset around six months, often triggered by fever, and sodium channel blockers worsened "
              "seizures.", "Which drugs make seizures worse with SCN1A variants?"),
    ("SCN2A", "Among children with epileptic encephalopathy, those with SCN2A variants and onset in the first week of "
              "life responded to high-dose phenytoin, whereas later-onset cases did not.",
     "Which treatment worked for early seizures due to SCN2A variants?"),
    ("SCN8A", "In the epileptic encephalopathy cohort, SCN8A gain-of-function variants presented in the first months "
              "with tonic seizures that responded to oxcarbazepine.", "Which medicine helps SCN8A seizures?"),
    ("KCNQ2", "KCNQ2 encephalopathy begins in the first days of life with tonic seizures and burst suppression on "
              "the electroencephalogram, and carbamazepine is often effective.", "When do KCNQ2 seizures start?"),
    ("STXBP1", "Children with STXBP1 variants had early infantile epilepsy with tremor and severe intellectual "
               "disability; levetiracetam halved seizures in half of them.",
     "What reduced seizures in children with STXBP1 variants?"),
    ("CDKL5", "CDKL5 deficiency disorder affected mostly girls, with epilepsy from about six weeks of age and "
              "cortical visual impairment; ganaxolone reduced motor seizures.", "Which drug helped CDKL5 deficiency?"),
    ("PCDH19", "PCDH19 clustering epilepsy affects heterozygous females, with clusters of seizures during fever in "
               "the first years of life.", "Who is affected by PCDH19 epilepsy?"),
    ("SLC2A1", "SLC2A1 variants impair glucose transport into the brain, lower cerebrospinal fluid glucose and cause "
               "childhood epilepsy that the ketogenic diet controls.",
     "How is epilepsy from SLC2A1 variants managed?"),
    ("KCNE1", "In long QT syndrome type 5 from KCNE1 variants, QT prolongation is mild and beta blockers prevent "
              "most cardiac events.", "How are events prevented with KCNE1 variants?"),
    ("CACNA1C", "CACNA1C variants cause Timothy syndrome, combining QT prolongation with syndactyly and autism.",
     "What other features come with CACNA1C variants?"),
    ("CALM2", "Calmodulin variants in CALM2 cause severe infantile long QT syndrome with functional 2:1 "
              "atrioventricular block.", "How severe is long QT with CALM2 variants?"),
    ("RYR2", "RYR2 variants cause catecholaminergic polymorphic ventricular tachycardia, with exercise-induced "
             "bidirectional tachycardia treated with flecainide.", "Which arrhythmia do RYR2 variants cause?"),
    ("CASQ2", "Recessive CASQ2 variants cause a rarer form of catecholaminergic ventricular tachycardia that presents "
              "in early childhood.", "At what age do CASQ2 variants present?"),
    ("TRDN", "Triadin knockout syndrome from TRDN variants causes exercise-induced cardiac arrest in young children "
             "with T-wave inversions.", "What happens to children with TRDN variants?"),
]
_GENES += [(gene, passage) for gene, passage, _ in _CLUSTERS]
_GENE_QUESTIONS = [
    "Which condition is caused by KCNH2 variants?", "What disease do MYBPC3 variants lead to?",
    "Which disorder is linked to SCN5A?", "What is the clinical picture of LMNA variants?",
    "What disease results from F9 variants?", "Which disorder involves MECP2?",
    "What does a CGG expansion in FMR1 cause?", "Which syndrome is associated with germline TP53 variants?",
    "What do VHL variants cause?", "What condition follows from HFE variants?",
    "What is the consequence of variants in COL1A1?", "What disease is linked to PKD1?",
    "What does the KRAS G12C variant predict?", "Which therapy suits ALK fusions?",
    "What do GBA variants cause?", "What does PCSK9 do to cholesterol?",
    "What is associated with MLH1 variants?", "What is caused by HEXA variants?",
    "Which cancers do BRCA2 variants raise?", "Which disease involves JAK2 V617F?",
] + [f"What do {gene} variants cause?" for gene, _, _ in _FAMILIES] + [q for _, _, q in _CLUSTERS]

# (drug, dose text, passage); several doses per drug, the question names drug and dose
_DOSES = [
    ("aspirin", "75 mg", "Aspirin 75 mg daily is the usual long-term antiplatelet dose after myocardial infarction."),
    ("aspirin", "300 mg", "A loading dose of aspirin 300 mg is given as soon as ischaemic stroke is confirmed by "
                          "imaging."),
    ("aspirin", "325 mg", "In the trial, aspirin 325 mg daily caused more gastrointestinal bleeding than lower doses "
                          "without better protection."),
    ("aspirin", "150 mg", "Aspirin 150 mg at night from twelve weeks of gestation reduced preterm preeclampsia in "
                          "high-risk pregnancies."),
    ("metformin", "500 mg", "Metformin is started at 500 mg with the evening meal to limit gastrointestinal side "
                            "effects."),
    ("metformin", "850 mg", "Metformin 850 mg twice daily in overweight patients reduced myocardial infarction in "
                            "the long-term follow-up."),
    ("metformin", "2000 mg", "Extended-release metformin can be taken as 2000 mg once daily, its maximum dose."),
    ("atorvastatin", "10 mg", "Atorvastatin 10 mg lowered first cardiovascular events in patients with diabetes and "
                              "average cholesterol."),
    ("atorvastatin", "80 mg", "Atorvastatin 80 mg started after acute coronary syndrome reduced recurrent events "
                              "compared with moderate therapy."),
    ("atorvastatin", "20 mg", "Atorvastatin 20 mg is the recommended starting dose for primary prevention in "
                              "adults."),
    ("methotrexate", "7.5 mg", "Methotrexate for rheumatoid arthritis starts at 7.5 mg once weekly with folic acid."),
    ("methotrexate", "25 mg", "Methotrexate can be escalated to 25 mg weekly, given subcutaneously when oral "
                              "absorption falls."),
    ("prednisolone", "40 mg", "Prednisolone 40 mg for five days is sufficient for most exacerbations of chronic "
                              "obstructive pulmonary disease."),
    ("prednisolone", "60 mg", "Giant cell arteritis with visual symptoms is treated with prednisolone 60 mg daily "
                              "without delay."),
    ("prednisolone", "5 mg", "Long-term prednisolone 5 mg daily still increases fracture risk and warrants bone "
                             "protection."),
    ("levothyroxine", "25 micrograms", "In older patients with heart disease, levothyroxine is started at "
                                       "25 micrograms daily."),
    ("levothyroxine", "100 micrograms", "Most adults with primary hypothyroidism need about 100 micrograms of "
                                        "levothyroxine daily."),
    ("amoxicillin", "500 mg", "Amoxicillin 500 mg three times daily for five days treats most community-acquired "
                              "pneumonia in adults."),
    ("amoxicillin", "1 g", "Amoxicillin 1 g twice daily is part of triple therapy for Helicobacter pylori."),
    ("ibuprofen", "400 mg", "Ibuprofen 400 mg gives analgesia similar to higher doses with fewer adverse effects."),
    ("ibuprofen", "800 mg", "Ibuprofen 800 mg three times daily raised cardiovascular risk in the arthritis trial."),
    ("paracetamol", "4 g", "The maximum daily dose of paracetamol for adults is 4 g in divided doses."),
    ("paracetamol", "15 mg/kg", "For children, paracetamol is dosed at 15 mg/kg every six hours."),
    ("warfarin", "5 mg", "Warfarin is usually initiated at 5 mg daily with INR checks on alternate days."),
    ("warfarin", "10 mg", "A 10 mg warfarin loading regimen reached therapeutic INR faster in outpatients with "
                          "thrombosis."),
]
_DOSE_QUESTIONS = [
    ("aspirin", "325 mg", "What was seen with aspirin 325 mg?"),
    ("aspirin", "150 mg", "What is aspirin 150 mg used for?"),
    ("metformin", "850 mg", "What did metformin 850 mg achieve?"),
    ("metformin", "2000 mg", "Can metformin be given as 2000 mg?"),
    ("atorvastatin", "80 mg", "When is atorvastatin 80 mg used?"),
    ("atorvastatin", "10 mg", "What did atorvastatin 10 mg show?"),
    ("methotrexate", "25 mg", "How is methotrexate 25 mg given?"),
    ("prednisolone", "60 mg", "When is prednisolone 60 mg needed?"),
    ("prednisolone", "5 mg", "What is the risk of prednisolone 5 mg?"),
    ("levothyroxine", "25 micrograms", "Who starts levothyroxine at 25 micrograms?"),
    ("amoxicillin", "1 g", "What is amoxicillin 1 g part of?"),
    ("ibuprofen", "800 mg", "What did ibuprofen 800 mg do?"),
    ("paracetamol", "15 mg/kg", "Who gets paracetamol 15 mg/kg?"),
    ("warfarin", "10 mg", "What did warfarin 10 mg loading achieve?"),
]

# (question, passage): ordinary questions, some with other word forms than the passage
_KEYWORD = [
    ("Which enzyme do statins inhibit?", "Statins inhibit HMG-CoA reductase, the rate-limiting enzyme of cholesterol "
                                         "synthesis in the liver."),
    ("How does metformin lower glucose?", "Metformin lowers glucose mainly by suppressing hepatic gluconeogenesis."),
    ("What is the antidote for paracetamol overdose?", "Acetylcysteine is the antidote for paracetamol overdose and is "
                                                       "most effective within eight hours."),
    ("Which vitamin deficiency causes scurvy?", "Scurvy results from vitamin C deficiency and presents with bleeding "
                                                "gums and poor wound healing."),
    ("How is anaphylaxis treated?", "Intramuscular adrenaline into the thigh is the first treatment of anaphylaxis."),
    ("What bacterium causes tuberculosis?", "Tuberculosis is caused by Mycobacterium tuberculosis, spread by airborne "
                                            "droplets."),
    ("Which antibiotics treat Lyme disease?", "Early Lyme disease is treated with doxycycline for ten to fourteen "
                                              "days."),
    ("How do proton pump inhibitors work?", "Proton pump inhibitors irreversibly block the hydrogen potassium ATPase "
                                            "of gastric parietal cells."),
    ("What does insulin resistance lead to?", "Insulin resistance leads to compensatory hyperinsulinaemia and, when "
                                              "beta cells fail, type 2 diabetes."),
    ("Which hormone regulates calcium in blood?", "Parathyroid hormone raises serum calcium by bone resorption and "
                                                  "renal reabsorption."),
    ("How is iron deficiency anaemia diagnosed?", "A low serum ferritin is the most specific test for iron deficiency "
                                                  "anaemia."),
    ("What is the first-line drug for epilepsy in women of childbearing age?",
     "Lamotrigine or levetiracetam is preferred over valproate for epilepsy in women of childbearing age."),
    ("How do beta blockers reduce heart rate?", "Beta blockers reduce heart rate by blocking beta-1 adrenergic "
                                                "receptors in the sinoatrial node."),
    ("What inhibits platelet aggregation irreversibly?", "Aspirin irreversibly acetylates cyclooxygenase-1 and thereby "
                                                         "inhibits platelet aggregation for the platelet's lifespan."),
    # topical clusters (several statin and aspirin passages): the shared drug name does not decide
    ("How common are muscle complaints on statins?", "Statin-associated muscle symptoms occur in up to one in ten "
                                                     "patients, and rechallenge with a different statin is often "
                                                     "tolerated."),
    ("Do statins cause diabetes?", "Statins modestly increase the risk of new-onset diabetes, mainly in people with "
                                   "prediabetes."),
    ("Which statin is the most potent?", "Rosuvastatin lowers LDL cholesterol more per milligram than simvastatin or "
                                         "pravastatin."),
    ("Which antibiotic interacts with statins?", "Statin therapy should be paused during a course of clarithromycin "
                                                 "because of the risk of myopathy."),
    ("Should liver tests be checked during statin treatment?", "Routine monitoring of liver enzymes is not needed once "
                                                              "statin therapy is established."),
    ("Which breathing disorder gets worse with aspirin?", "Aspirin-exacerbated respiratory disease combines asthma, "
                                                          "nasal polyps and reactions to NSAIDs."),
    ("Why should children with a viral illness not take aspirin?", "Aspirin is avoided in children with viral "
                                                                   "infections because of the risk of Reye "
                                                                   "syndrome."),
    ("Is enteric-coated aspirin safer for the stomach?", "Enteric-coated aspirin does not reduce major "
                                                         "gastrointestinal bleeding compared with plain aspirin."),
]

# Background passages: plausible, on the same topics, none the answer to a question.
_ORGANS = ["liver", "kidney", "lung", "heart", "skin", "thyroid", "pancreas", "bowel", "brain", "bone marrow"]
_TESTS = ["ultrasound", "biopsy", "computed tomography", "magnetic resonance imaging", "blood tests"]
_GROUPS = ["older adults", "children", "pregnant women", "athletes", "smokers", "people with diabetes"]
_FINDINGS = ["inflammation", "fibrosis", "a benign cyst", "reduced function", "an incidental nodule"]
_CLASSES = ["ACE inhibitors", "loop diuretics", "SGLT2 inhibitors", "anticoagulants", "opioids", "corticosteroids",
            "macrolide antibiotics", "antipsychotics", "benzodiazepines", "calcium channel blockers"]
_CONCERNS = ["falls", "kidney function", "drug interactions", "electrolyte disturbance", "sedation"]


def _background() -> list[str]:
    """Template sentences over organs, tests, groups and findings (deterministic, varied)."""
    out = []
    for i, organ in enumerate(_ORGANS):
        for j, group in enumerate(_GROUPS):
            test = _TESTS[(i + j) % len(_TESTS)]
            finding = _FINDINGS[(i * 3 + j) % len(_FINDINGS)]
            out.append(f"In {group}, {finding} of the {organ} is usually assessed by {test}, and follow-up depends "
                       f"on symptoms.")
            concern = _CONCERNS[(i + 2 * j) % len(_CONCERNS)]
            out.append(f"When {_CLASSES[i]} are prescribed to {group}, clinicians monitor {concern} at each review.")
        for k, concern in enumerate(_CONCERNS[:4]):
            out.append(f"After {organ} surgery, attention is paid to {concern} before discharge "
                       f"(audit cycle {k + 1}).")
    return out


# Report boilerplate: gene and dose passages carry it as abstracts do, so the deciding identifier is one
# detail among ~60 word pieces (a one-sentence passage would hand a dense model the symbol on a plate).
_GENETICS_CONTEXT = [
    "Genetic testing was offered to the proband and first-degree relatives after counselling.",
    "Variants were classified with the ACMG criteria and confirmed by Sanger sequencing.",
    "Segregation analysis within the family supported pathogenicity.",
    "Cascade testing then identified further carriers among relatives.",
    "Next-generation sequencing panels detect such variants in routine diagnostics.",
]
_DOSE_CONTEXT = [
    "{drug} has been used for decades, and its dosing is adjusted to kidney function, age and interacting "
    "medicines.",
    "Adherence was assessed by pill counts at each visit.",
    "Dose selection for {drug} balances benefit against adverse effects in each patient.",
    "Prescribers review {drug} at least once a year.",
]


def _with_context(text: str, context: list[str], n: int, **names: str) -> str:
    """``text`` between two boilerplate sentences chosen by ``n`` (deterministic variety)."""
    before = context[n % len(context)].format(**names)
    after = context[(n + 2) % len(context)].format(**names)
    return f"{before} {text} {after}"


@dataclass(frozen=True)
class EvalQuery:
    """A question, the id of the one relevant document, and its kind (see the module docstring)."""

    question: str
    relevant: str
    kind: str


def build_corpus() -> tuple[list[dict[str, str]], list[EvalQuery]]:
    """(documents as {"id", "title", "text"}, questions); deterministic."""
    docs: list[dict[str, str]] = []
    queries: list[EvalQuery] = []

    def add(doc_id: str, text: str) -> str:
        docs.append({"id": doc_id, "title": "", "text": text})
        return doc_id

    for n, (question, answer, decoy) in enumerate(_SYNONYM):
        queries.append(EvalQuery(question, add(f"syn-{n:02d}", answer), "synonym"))
        add(f"syn-{n:02d}-decoy", decoy)
    gene_ids = {gene: add(f"gene-{gene}", _with_context(passage, _GENETICS_CONTEXT, n))
                for n, (gene, passage) in enumerate(_GENES)}
    for question in _GENE_QUESTIONS:
        gene = next(g for g in gene_ids if f" {g} " in f" {question.rstrip('?')} ")
        queries.append(EvalQuery(question, gene_ids[gene], "identifier"))
    dose_ids = {(drug, dose): add(f"dose-{drug}-{dose.replace(' ', '').replace('/', '-')}",
                                  _with_context(passage, _DOSE_CONTEXT, n, drug=drug.capitalize()))
                for n, (drug, dose, passage) in enumerate(_DOSES)}
    for drug, dose, question in _DOSE_QUESTIONS:
        queries.append(EvalQuery(question, dose_ids[(drug, dose)], "dose"))
    for n, (question, passage) in enumerate(_KEYWORD):
        queries.append(EvalQuery(question, add(f"kw-{n:02d}", passage), "keyword"))
    for n, text in enumerate(_background()):
        add(f"bg-{n:03d}", text)
    return docs, queries


def write_corpus(directory: Path) -> tuple[Path, list[EvalQuery]]:
    """Write the corpus as ``directory/corpus.jsonl``; returns its path and the questions."""
    docs, queries = build_corpus()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path, queries
