function varargout = mexSVDsmall2(varargin)
% Octave stand-in for Kilosort2's mexSVDsmall2 mex: pykilosort's kernel through mex_bridge.
varargout = cell(1, max(nargout, 1));
[varargout{:}] = mex_bridge('mexSVDsmall2', nargout, varargin{:});
end
