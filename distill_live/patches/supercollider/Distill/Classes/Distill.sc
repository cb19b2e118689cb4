// The Quark's class: Distill.new makes a distill object for a running `distill-live serve`.
// The object is made by Distill.scd (one folder up), the one implementation of it, so that the file
// also works on its own, without installing the Quark. See the help file (Distill.schelp).
Distill {
	// the file the object comes from
	*scd { ^this.filenameSymbol.asString.dirname.dirname +/+ "Distill.scd" }

	// an Event with a method per control of the engine; connect: ask for replies, the namespace and a dump
	*new { |host = "127.0.0.1", port = 9000, connect = true|
		var d;
		(distillHost: host, distillPort: port, distillHeadless: true).use { d = this.scd.load };
		if(d.isNil) { Error("Distill: % did not make a distill object".format(this.scd)).throw };
		if(connect) { d.connect };
		^d
	}

	// the same, with its window of sliders that follow the engine
	*window { |host = "127.0.0.1", port = 9000| ^this.new(host, port).makeWindow }
}
