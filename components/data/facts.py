"""Fact tables the embedded QA dataset is generated from (written for this project)."""

# Atomic number order: symbol and English name of the 118 elements.
ELEMENTS = """
H Hydrogen|He Helium|Li Lithium|Be Beryllium|B Boron|C Carbon|N Nitrogen|O Oxygen|F Fluorine|Ne Neon|
Na Sodium|Mg Magnesium|Al Aluminium|Si Silicon|P Phosphorus|S Sulfur|Cl Chlorine|Ar Argon|K Potassium|
Ca Calcium|Sc Scandium|Ti Titanium|V Vanadium|Cr Chromium|Mn Manganese|Fe Iron|Co Cobalt|Ni Nickel|
Cu Copper|Zn Zinc|Ga Gallium|Ge Germanium|As Arsenic|Se Selenium|Br Bromine|Kr Krypton|Rb Rubidium|
Sr Strontium|Y Yttrium|Zr Zirconium|Nb Niobium|Mo Molybdenum|Tc Technetium|Ru Ruthenium|Rh Rhodium|
Pd Palladium|Ag Silver|Cd Cadmium|In Indium|Sn Tin|Sb Antimony|Te Tellurium|I Iodine|Xe Xenon|
Cs Caesium|Ba Barium|La Lanthanum|Ce Cerium|Pr Praseodymium|Nd Neodymium|Pm Promethium|Sm Samarium|
Eu Europium|Gd Gadolinium|Tb Terbium|Dy Dysprosium|Ho Holmium|Er Erbium|Tm Thulium|Yb Ytterbium|
Lu Lutetium|Hf Hafnium|Ta Tantalum|W Tungsten|Re Rhenium|Os Osmium|Ir Iridium|Pt Platinum|Au Gold|
Hg Mercury|Tl Thallium|Pb Lead|Bi Bismuth|Po Polonium|At Astatine|Rn Radon|Fr Francium|Ra Radium|
Ac Actinium|Th Thorium|Pa Protactinium|U Uranium|Np Neptunium|Pu Plutonium|Am Americium|Cm Curium|
Bk Berkelium|Cf Californium|Es Einsteinium|Fm Fermium|Md Mendelevium|No Nobelium|Lr Lawrencium|
Rf Rutherfordium|Db Dubnium|Sg Seaborgium|Bh Bohrium|Hs Hassium|Mt Meitnerium|Ds Darmstadtium|
Rg Roentgenium|Cn Copernicium|Nh Nihonium|Fl Flerovium|Mc Moscovium|Lv Livermorium|Ts Tennessine|Og Oganesson
"""

# Country, capital, continent.
COUNTRIES = """
Afghanistan;Kabul;Asia|Albania;Tirana;Europe|Algeria;Algiers;Africa|Andorra;Andorra la Vella;Europe|
Angola;Luanda;Africa|Argentina;Buenos Aires;South America|Armenia;Yerevan;Asia|Australia;Canberra;Oceania|
Austria;Vienna;Europe|Azerbaijan;Baku;Asia|Bahrain;Manama;Asia|Bangladesh;Dhaka;Asia|Belarus;Minsk;Europe|
Belgium;Brussels;Europe|Belize;Belmopan;North America|Benin;Porto-Novo;Africa|Bhutan;Thimphu;Asia|
Bolivia;Sucre;South America|Bosnia and Herzegovina;Sarajevo;Europe|Botswana;Gaborone;Africa|
Brazil;Brasilia;South America|Brunei;Bandar Seri Begawan;Asia|Bulgaria;Sofia;Europe|
Burkina Faso;Ouagadougou;Africa|Burundi;Gitega;Africa|Cambodia;Phnom Penh;Asia|Cameroon;Yaounde;Africa|
Canada;Ottawa;North America|Chad;N'Djamena;Africa|Chile;Santiago;South America|China;Beijing;Asia|
Colombia;Bogota;South America|Comoros;Moroni;Africa|Costa Rica;San Jose;North America|Croatia;Zagreb;Europe|
Cuba;Havana;North America|Cyprus;Nicosia;Europe|Czechia;Prague;Europe|Denmark;Copenhagen;Europe|
Djibouti;Djibouti;Africa|Dominican Republic;Santo Domingo;North America|Ecuador;Quito;South America|
Egypt;Cairo;Africa|El Salvador;San Salvador;North America|Eritrea;Asmara;Africa|Estonia;Tallinn;Europe|
Ethiopia;Addis Ababa;Africa|Fiji;Suva;Oceania|Finland;Helsinki;Europe|France;Paris;Europe|
Gabon;Libreville;Africa|Georgia;Tbilisi;Asia|Germany;Berlin;Europe|Ghana;Accra;Africa|Greece;Athens;Europe|
Guatemala;Guatemala City;North America|Guinea;Conakry;Africa|Guyana;Georgetown;South America|
Haiti;Port-au-Prince;North America|Honduras;Tegucigalpa;North America|Hungary;Budapest;Europe|
Iceland;Reykjavik;Europe|India;New Delhi;Asia|Indonesia;Jakarta;Asia|Iran;Tehran;Asia|Iraq;Baghdad;Asia|
Ireland;Dublin;Europe|Israel;Jerusalem;Asia|Italy;Rome;Europe|Jamaica;Kingston;North America|
Japan;Tokyo;Asia|Jordan;Amman;Asia|Kazakhstan;Astana;Asia|Kenya;Nairobi;Africa|Kuwait;Kuwait City;Asia|
Kyrgyzstan;Bishkek;Asia|Laos;Vientiane;Asia|Latvia;Riga;Europe|Lebanon;Beirut;Asia|Lesotho;Maseru;Africa|
Liberia;Monrovia;Africa|Libya;Tripoli;Africa|Liechtenstein;Vaduz;Europe|Lithuania;Vilnius;Europe|
Luxembourg;Luxembourg;Europe|Madagascar;Antananarivo;Africa|Malawi;Lilongwe;Africa|
Malaysia;Kuala Lumpur;Asia|Maldives;Male;Asia|Mali;Bamako;Africa|Malta;Valletta;Europe|
Mauritania;Nouakchott;Africa|Mauritius;Port Louis;Africa|Mexico;Mexico City;North America|
Moldova;Chisinau;Europe|Monaco;Monaco;Europe|Mongolia;Ulaanbaatar;Asia|Montenegro;Podgorica;Europe|
Morocco;Rabat;Africa|Mozambique;Maputo;Africa|Myanmar;Naypyidaw;Asia|Namibia;Windhoek;Africa|
Nepal;Kathmandu;Asia|Netherlands;Amsterdam;Europe|New Zealand;Wellington;Oceania|
Nicaragua;Managua;North America|Niger;Niamey;Africa|Nigeria;Abuja;Africa|North Korea;Pyongyang;Asia|
North Macedonia;Skopje;Europe|Norway;Oslo;Europe|Oman;Muscat;Asia|Pakistan;Islamabad;Asia|
Panama;Panama City;North America|Papua New Guinea;Port Moresby;Oceania|Paraguay;Asuncion;South America|
Peru;Lima;South America|Philippines;Manila;Asia|Poland;Warsaw;Europe|Portugal;Lisbon;Europe|
Qatar;Doha;Asia|Romania;Bucharest;Europe|Russia;Moscow;Europe|Rwanda;Kigali;Africa|Samoa;Apia;Oceania|
San Marino;San Marino;Europe|Saudi Arabia;Riyadh;Asia|Senegal;Dakar;Africa|Serbia;Belgrade;Europe|
Sierra Leone;Freetown;Africa|Singapore;Singapore;Asia|Slovakia;Bratislava;Europe|Slovenia;Ljubljana;Europe|
Somalia;Mogadishu;Africa|South Africa;Pretoria;Africa|South Korea;Seoul;Asia|South Sudan;Juba;Africa|
Spain;Madrid;Europe|Sri Lanka;Sri Jayawardenepura Kotte;Asia|Sudan;Khartoum;Africa|
Suriname;Paramaribo;South America|Sweden;Stockholm;Europe|Switzerland;Bern;Europe|Syria;Damascus;Asia|
Tajikistan;Dushanbe;Asia|Tanzania;Dodoma;Africa|Thailand;Bangkok;Asia|Togo;Lome;Africa|Tonga;Nuku'alofa;Oceania|
Trinidad and Tobago;Port of Spain;North America|Tunisia;Tunis;Africa|Turkey;Ankara;Asia|
Turkmenistan;Ashgabat;Asia|Uganda;Kampala;Africa|Ukraine;Kyiv;Europe|United Arab Emirates;Abu Dhabi;Asia|
United Kingdom;London;Europe|United States;Washington, D.C.;North America|Uruguay;Montevideo;South America|
Uzbekistan;Tashkent;Asia|Vanuatu;Port Vila;Oceania|Venezuela;Caracas;South America|Vietnam;Hanoi;Asia|
Yemen;Sanaa;Asia|Zambia;Lusaka;Africa|Zimbabwe;Harare;Africa
"""

# Larger unit, smaller unit, how many of the smaller make one of the larger.
UNITS = [
    ("kilometre", "kilometres", "metre", "metres", 1000),
    ("metre", "metres", "centimetre", "centimetres", 100),
    ("centimetre", "centimetres", "millimetre", "millimetres", 10),
    ("kilogram", "kilograms", "gram", "grams", 1000),
    ("litre", "litres", "millilitre", "millilitres", 1000),
    ("hour", "hours", "minute", "minutes", 60),
    ("minute", "minutes", "second", "seconds", 60),
    ("day", "days", "hour", "hours", 24),
    ("week", "weeks", "day", "days", 7),
    ("year", "years", "month", "months", 12),
]


def elements() -> list[tuple[int, str, str]]:
    """(atomic number, symbol, name) for every element."""
    pairs = [p.strip() for p in ELEMENTS.replace("\n", "").split("|") if p.strip()]
    return [(z, *p.split(" ", 1)) for z, p in enumerate(pairs, start=1)]


def countries() -> list[tuple[str, str, str]]:
    """(country, capital, continent) rows."""
    rows = [r.strip() for r in COUNTRIES.replace("\n", "").split("|") if r.strip()]
    return [tuple(r.split(";")) for r in rows]  # type: ignore[misc]
